"""No two API routes take the same method and path, so the order in which app.api_router
includes the routers decides nothing but how fast a request finds its route (the busiest
come first)."""

from __future__ import annotations

from typing import Any

from devpush.app import api_router


def routes(items: list[Any], prefix: str = "") -> list[tuple[str, set[str]]]:
    found = []
    for route in items:
        if hasattr(route, "original_router"):  # an included router
            found += routes(route.original_router.routes, prefix + route.include_context.prefix)
        else:
            found.append((prefix + route.path, set(route.methods or ())))
    return found


def could_both_match(a: list[str], b: list[str]) -> bool:
    """Whether some path matches both templates (split into segments): `{x}` takes one
    segment, `{x:path}` one or more, anything else only itself."""
    if not a or not b:
        return not a and not b
    for this, other in ((a, b), (b, a)):
        if this[0].endswith(":path}"):
            return any(could_both_match(this[1:], other[k:]) for k in range(1, len(other) + 1))
    if "{" not in a[0] and "{" not in b[0] and a[0] != b[0]:
        return False
    return could_both_match(a[1:], b[1:])


def test_no_two_api_routes_take_the_same_request() -> None:
    table = routes(api_router().routes)
    assert len(table) > 50
    clashes = [
        (path, other)
        for i, (path, methods) in enumerate(table)
        for other, other_methods in table[i + 1 :]
        if methods & other_methods
        and could_both_match(path.strip("/").split("/"), other.strip("/").split("/"))
    ]
    assert clashes == []


def test_the_overlap_check_sees_overlaps() -> None:
    def split(path: str) -> list[str]:
        return path.strip("/").split("/")

    assert could_both_match(split("/a/{x}/c"), split("/a/b/{y}"))
    assert could_both_match(split("/d/{id}/t/{t:path}"), split("/d/{id}/t/x/y"))
    assert not could_both_match(split("/d/{id}/t/{t:path}"), split("/d/{id}/t"))
    assert not could_both_match(split("/a/{x}"), split("/a/{x}/c"))
    assert not could_both_match(split("/a/b"), split("/a/c"))
