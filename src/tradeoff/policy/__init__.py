"""Per-query policies: learn from records which configuration to use for each query."""
