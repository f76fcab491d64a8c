"""The token cache's own rules (auth/token_cache.py): an entry is trusted only under the
generation it was stored with and for TTL seconds, and the oldest goes when it is full."""

from __future__ import annotations

from datetime import UTC, datetime

from devpush.auth.service import Principal, ResolvedToken
from devpush.auth.token_cache import TokenCache


def resolved(user: str) -> ResolvedToken:
    principal = Principal(user_id=user, is_admin=False, scopes=frozenset({"read"}), token_id=user)
    return ResolvedToken(user, principal, None, None)


def test_an_entry_holds_only_under_its_generation() -> None:
    cache = TokenCache()
    cache.put("h1", "g1", resolved("u1"))
    assert cache.get("h1", "g1") == resolved("u1")
    assert cache.get("h1", "g2") is None
    assert cache.get("h1", "g1") is None  # a stale entry is dropped, not kept for later
    assert len(cache) == 0


def test_an_entry_expires_after_the_ttl() -> None:
    now = [100.0]
    cache = TokenCache(ttl=30, clock=lambda: now[0])
    cache.put("h1", "g", resolved("u1"))
    now[0] = 130.0
    assert cache.get("h1", "g") is not None
    now[0] = 130.5
    assert cache.get("h1", "g") is None


def test_the_oldest_entry_goes_when_full() -> None:
    cache = TokenCache(size=2)
    for n in (1, 2, 3):
        cache.put(f"h{n}", "g", resolved(f"u{n}"))
    assert len(cache) == 2
    assert cache.get("h1", "g") is None
    assert cache.get("h2", "g") is not None and cache.get("h3", "g") is not None
    cache.put("h3", "g", resolved("u3"))  # storing one it holds evicts nothing
    assert len(cache) == 2


def test_a_recorded_use_keeps_the_entry_and_its_age() -> None:
    now = [0.0]
    cache = TokenCache(ttl=30, clock=lambda: now[0])
    cache.put("h1", "g", resolved("u1"))
    now[0] = 20.0
    used = datetime(2026, 1, 1, tzinfo=UTC)
    cache.used("h1", used)
    entry = cache.get("h1", "g")
    assert entry is not None and entry.last_used_at == used
    now[0] = 31.0
    assert cache.get("h1", "g") is None  # recording a use did not make it younger
