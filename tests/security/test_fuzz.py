"""Fuzzing the pure functions that meet hostile input first (hypothesis):

- the branch-to-hostname sanitiser (naming.slugify, naming.label, and the branch label that
  deployments.service.alias_specs builds): labels are DNS-safe (`[a-z0-9-]`, at most 63
  characters, no dash at either end), the same input always gives the same label, and names
  that differ only after the point where they are shortened still get distinct labels;
- the webhook parser (github/webhooks.parse) on arbitrary JSON, mutated real payloads and raw
  bytes: it returns a model (or None for an event devpush ignores) or raises Invalid (422),
  never anything else.

Each hypothesis example checks a batch of inputs (BATCH), so the module checks CASES inputs in
all (at least 100,000) in a few seconds. Examples are derandomized so that CI is repeatable;
set DEVPUSH_FUZZ_RANDOM=1 to explore new ones.
"""

from __future__ import annotations

import json
import os
import re
import string
from typing import Any

from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from devpush.deployments.models import AliasType, Deployment
from devpush.deployments.service import alias_specs
from devpush.errors import Invalid
from devpush.github import webhooks
from devpush.naming import label, slugify
from devpush.projects.models import Project
from tests.integration.github.helpers import FIXTURES

BATCH = 10
LABEL_EXAMPLES = 3_000
DISTINCT_EXAMPLES = 2_000
WEBHOOK_EXAMPLES = 1_500
MUTATIONS, DOCUMENTS = 4, 3
# per example: each mutated payload and each arbitrary document under every event devpush
# handles and one random event name, and raw bytes under two events
WEBHOOK_PER_EXAMPLE = (MUTATIONS + DOCUMENTS) * (len(webhooks.EVENTS) + 1) + 2
CASES = LABEL_EXAMPLES * BATCH + DISTINCT_EXAMPLES * BATCH + WEBHOOK_EXAMPLES * WEBHOOK_PER_EXAMPLE
FUZZ = settings(
    deadline=None,
    database=None,
    derandomize=os.environ.get("DEVPUSH_FUZZ_RANDOM") != "1",
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
)
DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
HOSTILE = "abcXYZ019-_./\\ $`;|&()<>'\"\n\r\t\x00\x7f~^:?*[]@{}%#!=+,é\u202e\u200b\U0001f600"

names = st.one_of(
    st.text(max_size=80),  # any unicode: NUL, newlines, RTL marks, emoji
    st.text(alphabet=HOSTILE, max_size=120),
    st.text(alphabet=string.ascii_letters + string.digits + "-/_.", min_size=40, max_size=300),
)
project_slugs = st.text(alphabet=HOSTILE, max_size=60).map(lambda n: slugify(n, max_length=30))


def branch_label(project_slug: str, branch: str) -> str:
    project = Project(slug=project_slug)
    deployment = Deployment(id="abcdefghij0123456789", branch=branch, pr_number=None)
    specs = alias_specs(project, deployment, None)
    assert all(DNS_LABEL.match(s.value) for s in specs), [s.value for s in specs]
    return next(s.value for s in specs if s.type == AliasType.branch)


def test_the_fuzzers_check_at_least_100k_inputs() -> None:
    assert CASES >= 100_000


@settings(FUZZ, max_examples=LABEL_EXAMPLES)
@given(project_slugs, st.lists(names, min_size=BATCH, max_size=BATCH))
@example("shop", ["", "-", "--", "\x00", "/" * 300, "A" * 63, "a" * 64, "é" * 100] + ["x"] * 2)
def test_labels_are_dns_safe_and_deterministic(project: str, batch: list[str]) -> None:
    for name in batch:
        slug = slugify(name)
        assert SLUG.match(slug) or slug == "x", slug
        assert len(slug) <= 40 and slug == slugify(name)
        own = label(project, "env", name)
        assert DNS_LABEL.match(own) and own == label(project, "env", name), own
        value = branch_label(project, name)
        assert DNS_LABEL.match(value), value
        assert len(value) <= 63 and value == branch_label(project, name)


@settings(FUZZ, max_examples=DISTINCT_EXAMPLES)
@given(
    project_slugs,
    st.text(alphabet=string.ascii_lowercase + string.digits, min_size=60, max_size=200),
    st.lists(st.text(max_size=30), min_size=BATCH, max_size=BATCH, unique=True),
)
@example("shop", "feature-" + "x" * 60, [f"-{n}" for n in range(BATCH)])
def test_names_that_differ_after_the_cut_get_distinct_labels(
    project: str, prefix: str, suffixes: list[str]
) -> None:
    """Branches sharing a long prefix: the part that survives shortening is the same, so
    only the hash of the whole name can tell them apart (and must)."""
    branches = [prefix + s for s in suffixes]
    assert len({branch_label(project, b) for b in branches}) == len(branches)
    assert len({label(project, "branch", b) for b in branches}) == len(branches)


# ---- the webhook parser -----------------------------------------------------------------------
DELETE = object()
FIXTURE_DATA: list[tuple[str, dict[str, Any]]] = [
    (p.name.split(".")[0], json.loads(p.read_text())) for p in sorted(FIXTURES.glob("*.json"))
]


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path] if path else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*path, index))
    return found


PATHS = [(i, path) for i, (_, data) in enumerate(FIXTURE_DATA) for path in _paths(data)]
leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=6,
)
mutations = st.tuples(st.sampled_from(PATHS), st.one_of(st.just(DELETE), leaves, json_values))
EVENT_NAMES = sorted(webhooks.EVENTS)


def mutated(index: int, path: tuple[Any, ...], value: Any) -> tuple[str, bytes]:
    """The fixture with one node replaced (or removed), serialised; the fixture is restored."""
    event, data = FIXTURE_DATA[index]
    parent = data
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    old = parent[last]
    if value is DELETE:
        if isinstance(parent, dict):
            del parent[last]
        else:
            parent.pop(last)
    else:
        parent[last] = value
    try:
        return event, json.dumps(data).encode()
    finally:
        if value is DELETE and isinstance(parent, list):
            parent.insert(last, old)
        else:
            parent[last] = old


def parses_or_invalid(event: str, body: bytes) -> None:
    try:
        result = webhooks.parse(event, "fuzz-1", body)
    except Invalid:
        return
    if event in webhooks.EVENTS:
        assert result is not None
    else:
        assert result is None


@settings(FUZZ, max_examples=WEBHOOK_EXAMPLES)
@given(
    st.lists(mutations, min_size=MUTATIONS, max_size=MUTATIONS),
    st.lists(json_values, min_size=DOCUMENTS, max_size=DOCUMENTS),
    st.text(max_size=20),
    st.binary(max_size=200),
)
@example([], [[[[[]]]], "x", {"zen": None}], "", b"[" * 10_000)
def test_the_webhook_parser_only_ever_raises_invalid(
    changes: list[tuple[tuple[int, tuple[Any, ...]], Any]],
    documents: list[Any],
    other_event: str,
    raw: bytes,
) -> None:
    bodies = [mutated(index, path, value)[1] for (index, path), value in changes]
    bodies += [json.dumps(document).encode() for document in documents]
    for body in bodies:
        for event in (*EVENT_NAMES, other_event):
            parses_or_invalid(event, body)
    for event in ("push", "installation"):
        parses_or_invalid(event, raw)


def test_deep_nesting_is_invalid_not_a_crash() -> None:
    for depth in (10, 1000, 100_000):  # past Python's recursion limit
        parses_or_invalid("push", b'{"ref": ' + b"[" * depth + b"]" * depth + b"}")
        parses_or_invalid("push", b'{"a":' * depth + b"1" + b"}" * depth)


def test_every_fixture_parses_as_its_own_event() -> None:
    for event, data in FIXTURE_DATA:
        assert webhooks.parse(event, "fixture-1", json.dumps(data).encode()) is not None
