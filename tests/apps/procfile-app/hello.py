"""A framework-free WSGI application, the smallest thing gunicorn can serve."""

import json
import os
from wsgiref.simple_server import make_server

BODY = b"""<!doctype html>
<html>
  <head><title>hello</title></head>
  <body><h1>Hello, WSGI!</h1><p>corpus:procfile-app</p></body>
</html>
"""


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/health":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    if path == "/whoami":
        payload = json.dumps({"port": os.environ.get("PORT"), "dyno": os.environ.get("DYNO")})
        start_response("200 OK", [("Content-Type", "application/json")])
        return [payload.encode()]
    if path != "/":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    start_response(
        "200 OK",
        [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(BODY)))],
    )
    return [BODY]


if __name__ == "__main__":
    with make_server("127.0.0.1", int(os.environ.get("PORT", "8000")), application) as server:
        server.serve_forever()
