"""The app the runtimes' replica tests run: its build writes a random token (a build run twice
would write two) and an absolute symbolic link, as a virtualenv has; GET / answers
`token|$PORT|$REPLICA_TAG|<where the link points>`."""

BUILD = (
    "echo building && ln -s /bin/sh shell && "
    "python3 -c \"import uuid; open('built.txt', 'w').write(uuid.uuid4().hex)\""
)

REPLICA_APP = r"""
import os
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        with open("built.txt") as f:
            token = f.read()
        tag = os.environ.get("REPLICA_TAG", "")
        body = f"{token}|{os.environ['PORT']}|{tag}|{os.readlink('shell')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


print("replica listening on", os.environ["PORT"], flush=True)
HTTPServer((os.environ.get("HOST", "0.0.0.0"), int(os.environ["PORT"])), Handler).serve_forever()
"""
