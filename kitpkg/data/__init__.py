"""Streaming data: partition (pure), shard dataset, Lightning DataModule, local cache."""
