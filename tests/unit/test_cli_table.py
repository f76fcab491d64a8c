"""The CLI's tables: ids stay whole on a narrow terminal, since other commands take them."""

from __future__ import annotations

import pytest

from devpush.client import common


def test_ids_are_never_cut_short_on_a_narrow_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(common.out, "_width", 60)
    rows = [
        {"id": "y1wtexx85s1baipkvg8g", "environment": "production", "status": "succeeded"}
        | {"trigger": "manual", "size_bytes": 1365, "created_at": "2026-12-07T20:00:00Z"}
    ]
    common.table(rows, ["id", "environment", "status", "trigger", "size_bytes", "created_at"])
    shown = capsys.readouterr().out
    assert "y1wtexx85s1baipkvg8g" in shown
    assert max(len(line) for line in shown.splitlines()) <= 60
