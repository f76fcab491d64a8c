"""WSGI entry point: `gunicorn wsgi:app`."""

from poetry_app import create_app

app = create_app()
