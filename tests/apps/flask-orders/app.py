"""A small orders service: Flask behind gunicorn, its data in PostgreSQL through psycopg and
the DATABASE_URL that the platform gives it (a managed database)."""

import os
from urllib.parse import urlsplit, urlunsplit

import psycopg
from flask import Flask, jsonify, request

app = Flask(__name__)


def connect(database: str | None = None) -> psycopg.Connection:
    url = os.environ["DATABASE_URL"]
    if database:  # the same credentials, another database
        parts = urlsplit(url)
        url = urlunsplit(parts._replace(path=f"/{database}"))
    return psycopg.connect(url, connect_timeout=5)


@app.get("/")
def index():
    return "<!doctype html><title>Orders</title><h1>Orders</h1><p>corpus:flask-orders</p>"


@app.get("/orders")
def list_orders():
    with connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS orders (id serial PRIMARY KEY, item text)")
        rows = conn.execute("SELECT item FROM orders ORDER BY id").fetchall()
    return jsonify(orders=[item for (item,) in rows])


@app.post("/orders")
def add_order():
    item = (request.get_json(silent=True) or {}).get("item", "")
    if not isinstance(item, str) or not item.strip():
        return jsonify(error="an order needs an item"), 400
    with connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS orders (id serial PRIMARY KEY, item text)")
        conn.execute("INSERT INTO orders (item) VALUES (%s)", (item.strip(),))
    return jsonify(ok=True), 201


@app.get("/reach/<database>")
def reach(database: str):
    """Whether this app's role can open another database (it must not)."""
    try:
        with connect(database) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return jsonify(connected=False, error=str(exc).strip().splitlines()[0])
    return jsonify(connected=True)
