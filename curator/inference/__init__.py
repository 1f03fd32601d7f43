"""The inference engine: sorted, token-budget batching over a partition, models cached per worker."""
