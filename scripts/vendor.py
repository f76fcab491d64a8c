#!/usr/bin/env python3
"""Fetch the dashboard's pinned third-party files from the npm registry into
src/devpush/web/static/vendor/ (gitignored: nothing third-party is committed).

Each package's tarball is checked against the `dist.integrity` (sha512) that the registry's
metadata gives for the pinned version, and against the same hash pinned here, before a file is
taken from it. Idempotent: a file already there with the pinned hash recorded is kept.
Standard library only (it runs in the image build before devpush is installed).

    python3 scripts/vendor.py [DEST]
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import ssl
import sys
import tarfile
import urllib.request
from pathlib import Path

REGISTRY = os.environ.get("DEVPUSH_NPM_REGISTRY", "https://registry.npmjs.org").rstrip("/")
# name, version, the registry's dist.integrity for it, {file in the package: file here}
PACKAGES = [
    (
        "uplot",
        "1.6.32",
        "sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw==",
        {
            "package/dist/uPlot.iife.min.js": "uplot.min.js",
            "package/dist/uPlot.min.css": "uplot.min.css",
            "package/LICENSE": "uplot.LICENSE",
        },
    ),
]
DEFAULT_DEST = Path(__file__).resolve().parents[1] / "src" / "devpush" / "web" / "static" / "vendor"


def _context() -> ssl.SSLContext:
    # A TLS-inspecting proxy's CA bundle, as pip and npm are given one.
    bundle = next(
        (
            os.environ[v]
            for v in ("SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE")
            if os.environ.get(v)
        ),
        None,
    )
    return ssl.create_default_context(cafile=bundle)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60, context=_context()) as response:
        return bytes(response.read())


def _sri(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def fetch(name: str, version: str, pinned: str, files: dict[str, str], dest: Path) -> None:
    stamp = dest / f".{name}.integrity"
    if stamp.is_file() and stamp.read_text().strip() == pinned:
        if all((dest / target).is_file() for target in files.values()):
            return
    meta = json.loads(_get(f"{REGISTRY}/{name}/{version}"))
    dist = meta["dist"]
    if dist.get("integrity") != pinned:
        sys.exit(
            f"vendor: {name}@{version}: the registry says {dist.get('integrity')}, pinned {pinned}"
        )
    tarball = _get(dist["tarball"])
    if _sri(tarball) != pinned:
        sys.exit(f"vendor: {name}@{version}: the tarball's sha512 does not match {pinned}")
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        for member, target in files.items():
            source = archive.extractfile(member)
            if source is None:
                sys.exit(f"vendor: {name}@{version} has no {member}")
            tmp = dest / f".{target}.tmp"
            tmp.write_bytes(source.read())
            os.replace(tmp, dest / target)
    stamp.write_text(pinned + "\n")
    print(f"vendor: {name}@{version} -> {dest}")


def main() -> None:
    dest = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DEST
    for name, version, pinned, files in PACKAGES:
        fetch(name, version, pinned, files, dest)


if __name__ == "__main__":
    main()
