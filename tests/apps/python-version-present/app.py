import sys

from flask import Flask

app = Flask(__name__)


@app.get("/")
def index():
    version = ".".join(str(part) for part in sys.version_info[:3])
    return f"<p>corpus:python-version-present</p><p>python: {version}</p>"


@app.get("/health")
def health():
    return "ok"
