"""`devpush socket-proxy`: the only way the worker and the monitor reach the container engine.
An allowlist of the Engine API calls the docker runtime makes (docs/socket-proxy.md)."""
