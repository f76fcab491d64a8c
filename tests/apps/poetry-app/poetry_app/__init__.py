"""Application factory for poetry-app."""

import os

from flask import Flask


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["GREETING"] = os.environ.get("GREETING", "Hello from a Poetry-managed Flask app")

    @app.get("/")
    def index() -> str:
        return f"<!doctype html><h1>{app.config['GREETING']}</h1><p>corpus:poetry-app</p>"

    @app.get("/health")
    def health() -> str:
        return "ok"

    return app
