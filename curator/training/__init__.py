"""Your own classifier: heads on sentence embeddings (task=train), scores against gold labels (task=evaluate)."""
