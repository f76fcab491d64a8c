"""Compose mode: the same CLI commands drive the compose stack in compose/."""
