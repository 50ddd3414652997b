"""Analysis of stored records: per-configuration metrics, intervals, frontiers."""
