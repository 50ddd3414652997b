"""Measuring under load: load profiles, their scheduling, statistics, and what the server says."""
