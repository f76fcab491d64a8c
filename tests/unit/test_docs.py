"""The README documents every setting (its table comes from `devpush settings`)."""

from __future__ import annotations

from pathlib import Path

from devpush.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_documents_every_setting() -> None:
    text = README.read_text()
    missing = [n for n in Settings.model_fields if f"`DEVPUSH_{n.upper()}`" not in text]
    assert missing == [], f"run scripts/readme-settings.sh to document: {missing}"


def test_readme_opens_with_the_two_commands() -> None:
    head = README.read_text()[:1200]
    assert "make up" in head and "make test" in head
