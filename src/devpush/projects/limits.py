"""Bounds shared by the API's schemas and devpush.toml's checks."""

MAX_REPLICAS = 10  # instances of one deployment (deployments/replicas.py)
