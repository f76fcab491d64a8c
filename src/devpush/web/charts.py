"""The metrics charts of the deployment and project pages: drawn in the browser by uPlot, which
scripts/vendor.py fetches from the npm registry into static/vendor/ (never committed). When it
is missing the pages say so, and how to fetch it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

VENDOR_DIR = Path(__file__).with_name("static") / "vendor"
LIBRARY = "uplot.min.js"


def charts(deployment_id: str | None) -> dict[str, Any]:
    """The `charts` context of templates/metrics/_charts.html."""
    return {
        "deployment_id": deployment_id,
        "library_missing": not (VENDOR_DIR / LIBRARY).is_file(),
    }
