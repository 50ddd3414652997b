"""Meters: energy (RAPL, NVML), memory, analytic FLOPs, and a description of the host."""
