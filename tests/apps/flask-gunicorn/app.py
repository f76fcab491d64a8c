"""A small Flask service, deployed the way most tutorials deploy one: gunicorn in front."""

import os

from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/")
def index():
    return (
        "<!doctype html><title>Flask on gunicorn</title>"
        "<h1>Hello from Flask</h1><p>corpus:flask-gunicorn</p>"
    )


@app.get("/health")
def health():
    return "ok"


@app.get("/api/info")
def info():
    return jsonify(app="flask-gunicorn", python_env=os.environ.get("FLASK_ENV", "production"))


if __name__ == "__main__":
    # Local development only; production runs `gunicorn app:app`.
    app.run(host=os.environ.get("HOST", "0.0.0.0"), port=int(os.environ.get("PORT", "5000")))
