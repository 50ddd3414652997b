"""Measuring under load: load profiles, the scheduler that drives configurations at them, and
what is sampled beside (the upstream's own metrics)."""
