"""Managed databases: a PostgreSQL database and role per project environment on the platform's
PostgreSQL (or a server the admin configures), or a SQLite file on one of the project's
volumes; injected into deployments as DATABASE_URL, browsable, and backed up."""
