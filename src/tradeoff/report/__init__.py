"""Presenting results: console tables and machine-readable exports."""
