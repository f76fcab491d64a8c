"""Metrics: each live instance's CPU, memory and restarts and each deployment's requests,
sampled by the monitor (sampler.py), kept at full resolution for a week and as 5-minute
averages for 90 days (service.py), served per deployment (routes.py); and the platform's own
Prometheus metrics at /metrics (platform.py)."""
