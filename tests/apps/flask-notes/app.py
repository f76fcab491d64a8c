"""A small notes service: Flask behind gunicorn, its data in SQLite on a persistent volume
(declared in devpush.toml), in WAL mode so the live deployment and the one kept warm for a
rollback can both open it."""

import os
import sqlite3

from flask import Flask, jsonify, request

DATA_DIR = os.environ.get("NOTES_DIR", "/data")
RELEASE = "v1"

app = Flask(__name__)


def db() -> sqlite3.Connection:
    conn = sqlite3.connect(os.path.join(DATA_DIR, "notes.db"), timeout=5)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    return conn


@app.get("/")
def index():
    return f"<!doctype html><title>Notes</title><h1>Notes</h1><p>corpus:flask-notes {RELEASE}</p>"


@app.get("/notes")
def list_notes():
    with db() as conn:
        rows = conn.execute("SELECT body FROM notes ORDER BY id").fetchall()
    return jsonify(release=RELEASE, notes=[body for (body,) in rows])


@app.post("/notes")
def add_note():
    body = (request.get_json(silent=True) or {}).get("body", "")
    if not isinstance(body, str) or not body.strip():
        return jsonify(error="a note needs a body"), 400
    with db() as conn:
        conn.execute("INSERT INTO notes (body) VALUES (?)", (body.strip(),))
    return jsonify(ok=True), 201
