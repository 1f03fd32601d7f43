"""Your own classifier: heads on sentence embeddings (task=train), scores on gold labels (task=evaluate)."""
