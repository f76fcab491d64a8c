"""Slugs and hostname labels: turning user-chosen names (and hostile branch names) into
DNS-safe labels. Pure functions, fuzzed by the security suite."""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

_NON_LABEL = re.compile(r"[^a-z0-9]+")


def slugify(value: str, *, max_length: int = 40) -> str:
    """Lowercase ASCII letters, digits and single dashes; never empty."""
    slug = _NON_LABEL.sub("-", value.lower()).strip("-")
    slug = slug[:max_length].strip("-")
    return slug or "x"


@lru_cache(maxsize=4096)  # pure, and asked for every deployment of every list page
def label(*parts: str, max_length: int = 63) -> str:
    """Join slugified parts into one DNS label (<= 63 chars). A label that had to be shortened
    gets a short hash suffix so that two long names do not collide."""
    raw = "-".join(parts)
    joined = "-".join(slugify(p, max_length=200) for p in parts)
    if len(joined) <= max_length:
        return joined
    digest = hashlib.sha256(raw.encode()).hexdigest()[:6]
    return f"{joined[: max_length - 7].rstrip('-')}-{digest}"


# The words that join a project's slug to the rest of its alias hostnames
# (deployments/service.py `alias_specs`: {slug}-id-…, -pr-…, -branch-…, -env-…, -env-id-…).
ALIAS_WORDS = ("id", "pr", "branch", "env")


def reserved_word_in(slug: str) -> str | None:
    """The alias word that `slug` contains as a whole dash-separated part after its first
    (so that "shop-env-x" or "shop-pr" would own hostnames of project "shop"), else None.
    A slug without one can't produce another project's alias: every alias is the slug alone or
    the slug, a dash, one of these words and a dash."""
    for part in slug.split("-")[1:]:
        if part in ALIAS_WORDS:
            return part
    return None
