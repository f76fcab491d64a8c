"""A small API behind gunicorn that says which instance answered: replicas of one deployment
differ by host name (docker: each container its own) or port (process runtime: each replica
its own), so the platform's load balancing across them can be seen from outside."""

import os
import socket
import time

from flask import Flask, jsonify

RELEASE = os.environ.get("RELEASE", "v1")
INSTANCE = f"{socket.gethostname()}:{os.environ.get('PORT', '?')}"
STARTED = time.time()

app = Flask(__name__)


@app.get("/")
def index():
    return f"<!doctype html><title>Replicas</title><p>corpus:flask-replicas {RELEASE}</p>"


@app.get("/health")
def health():
    return jsonify(ok=True)


@app.get("/whoami")
def whoami():
    return jsonify(instance=INSTANCE, release=RELEASE, pid=os.getpid(), up=time.time() - STARTED)
