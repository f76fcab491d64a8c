"""Scenario 8 (issue #21): three copies each of the app, the worker and the monitor share one
PostgreSQL and one Redis. One `devpush up` (process runtime) runs one of each; two more of each
run beside it as an operator would start them on other machines (`devpush app|worker|monitor`
with the same settings, the same database and Redis). API requests go round-robin to the app
copies. While deployments are mid-way (building, in their instances), one app, one worker (one
that is sending a notification, its start jobs done) and one monitor are SIGKILLed.

- Every deployment concludes: each succeeds and serves its commit. (A worker killed during a
  deployment's start job, which lasts under a second, fails that deployment, saying so:
  `test_worker_kill.py` covers that; here the worker is killed once its start jobs are done.)
- Every event is delivered once. A webhook channel subscribed to the deployment events gets,
  for every such event in the outbox, exactly one delivery (one `X-Devpush-Delivery` id),
  recorded `succeeded`. The same delivery id may reach the receiver more than once only as an
  at-least-once retry of an attempt lost with the killed worker: the row then counts that lost
  attempt (attempts == 2) and no delivery is posted more times than its attempts.
- Every job runs once: each deployment's build prints its marker once (none twice), every
  minute's slot of a cron job has one history row and one marker (its log line and its line
  in a file on the environment's volume), none missed, and the queue drains.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import psutil
import pytest
from arq.constants import default_queue_name, in_progress_key_prefix
from sqlalchemy import select

from devpush.notifications.models import NotificationDelivery
from devpush.outbox.models import DomainEvent
from devpush.outbox.names import DEPLOYMENT_EVENTS
from devpush.platform import Platform
from devpush.runstate import read_state
from tests.chaos.checks import settings_of, wait_until_sound, with_platform
from tests.chaos.conftest import start_chaos_platform, stop_platform
from tests.conftest import free_port
from tests.e2e.apps import Api, build_log, commit, make_repo
from tests.e2e.platform import RunningPlatform, wait_health
from tests.integration.notifications.receiver import Receiver, receiving, verify

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]

COPIES = 2  # beside the one of each that `devpush up` runs
PROJECTS = 4
BUILD_MARK = "build-42"  # printed by `echo build-$((6*7))`: the command line itself doesn't match
TICK_MARK = "tick-42"
JOBS_CHECKED = ("start:", "finalize:", "fail:", "notify:")  # the queue drains of these
TICKER_TOML = """\
[[volumes]]
name = "data"
mount_path = "/data"

[[cron]]
name = "tick"
schedule = "* * * * *"
command = "echo tick >> /data/ticks; echo tick-$((6*7))"
timeout = 20
"""


# ---- the copies -------------------------------------------------------------------------
@dataclass
class Copy:
    name: str
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    path: Path
    port: int | None = None  # an app's own

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self, lines: int = 15) -> str:
        text = self.path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {self.path.name}\n" + "\n".join(text)


@dataclass
class Fleet:
    platform: RunningPlatform
    copies: list[Copy] = field(default_factory=list)

    def of(self, name: str) -> list[Copy]:
        return [c for c in self.copies if c.name == name and c.proc.poll() is None]

    def tails(self) -> str:
        return "\n".join(c.tail() for c in self.copies)


def spawn(platform: RunningPlatform, name: str, index: int, logs: Path) -> Copy:
    """`devpush <name>` with the platform's settings and its database and Redis, as `up`
    hands them to its own children; an app on a port of its own."""
    state = read_state(settings_of(platform))
    assert state is not None
    env = {
        **platform.env,
        "DEVPUSH_DATABASE_URL": state.database_url,
        "DEVPUSH_REDIS_URL": state.redis_url,
    }
    port = None
    if name == "app":
        port = free_port()
        env["DEVPUSH_APP_PORT"] = str(port)
    path = logs / f"{name}-{index}.log"
    log = open(path, "wb")  # noqa: SIM115 - closed with the copy
    proc = subprocess.Popen(
        [sys.executable, "-m", "devpush", name],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    return Copy(name, proc, log, path, port)


def stop_copies(copies: list[Copy]) -> None:
    order = {"monitor": 0, "worker": 1, "app": 2}  # the apps last: nothing calls them then
    for copy in sorted(copies, key=lambda c: order[c.name]):
        if copy.proc.poll() is None:
            copy.proc.send_signal(signal.SIGTERM)
            try:
                copy.proc.wait(30)
            except subprocess.TimeoutExpired:
                copy.proc.kill()
                copy.proc.wait(10)
        copy.log.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    platform = start_chaos_platform(
        tmp_path_factory.mktemp("many-copies"),
        DEVPUSH_NOTIFICATIONS_ALLOW_PRIVATE="true",
        # A lost delivery attempt is sent again 60 s (its claim) + 5 s after it was made.
        DEVPUSH_NOTIFICATIONS_SWEEP_INTERVAL="2",
        DEVPUSH_NOTIFICATIONS_LOST_AFTER="5",
    )
    logs = tmp_path_factory.mktemp("many-copies-logs")
    running = Fleet(platform)
    try:
        for name, index in itertools.product(("app", "worker", "monitor"), range(COPIES)):
            running.copies.append(spawn(platform, name, index, logs))
        for copy in running.of("app"):
            wait_health(copy.url, timeout=90)
        yield running
    finally:
        stop_copies(running.copies)
        stop_platform(platform)


# ---- the API, round-robin over the live app copies --------------------------------------
class RoundRobin:
    def __init__(self, urls: list[str], token: str, proxy_url: str) -> None:
        self.apis = {url: Api(url, token, proxy_url) for url in urls}
        self.turn = itertools.count()
        self.calls: Counter[str] = Counter()

    def __call__(self) -> Api:
        urls = list(self.apis)
        url = urls[next(self.turn) % len(urls)]
        self.calls[url] += 1
        return self.apis[url]

    def drop(self, url: str) -> None:
        self.apis.pop(url)

    def get(self, path: str, **params: Any) -> Any:
        return self().get(path, **params)

    def wait(self, deployment_id: str, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            deployment = self.get(f"/api/v1/deployments/{deployment_id}")
            if deployment["status"] == "completed":
                return dict(deployment)
            time.sleep(0.2)
        raise AssertionError(f"deployment {deployment_id} did not conclude: {deployment}")

    def wait_status(self, deployment_id: str, statuses: set[str], timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = str(self.get(f"/api/v1/deployments/{deployment_id}")["status"])
            if status in statuses:
                return status
            time.sleep(0.05)
        raise AssertionError(f"deployment {deployment_id} never reached {statuses}")

    def all_pages(self, path: str, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = self.get(path, **params, **({"cursor": cursor} if cursor else {}))
            items += page["items"]
            if not (cursor := page.get("next_cursor")):
                return items


# ---- faults -----------------------------------------------------------------------------
def kill(pid: int) -> None:
    psutil.Process(pid).send_signal(signal.SIGKILL)


FINISHED = ("\u2190", "!", "\u21bb", "\u2298")  # arq's log marks of a job's end: ← ! ↻ ⊘


def jobs_running(log: Path) -> set[str]:
    """The jobs a worker runs now, from its log (arq's `→ job_id:function(...)` when it starts
    one, `← job_id:function ●` and the like when it ends)."""
    started, ended = set(), set()
    for line in log.read_text(errors="replace").splitlines():
        try:
            words = str(json.loads(line).get("event", "")).split()
        except ValueError:
            continue
        if len(words) >= 3 and words[1] == "\u2192":
            started.add(words[2].split("(")[0])
        elif len(words) >= 3 and words[1] in FINISHED:
            ended.add(words[2])
    return started - ended


def kill_a_worker_mid_delivery(
    fleet: Fleet, rr: RoundRobin, ids: list[str]
) -> tuple[int, set[str]]:
    """Once no deployment is left in `prepare`, SIGKILL an extra worker that runs no start or
    finalize job (killed in its start job, a deployment fails, saying so: test_worker_kill.py;
    in its finalize job, it waits for the job's timeout to be run again), preferably one that is
    sending a notification (its receiver takes a second to answer); (its pid, its jobs)."""
    deadline = time.monotonic() + 120
    while any(rr.get(f"/api/v1/deployments/{d}")["status"] == "prepare" for d in ids):
        assert time.monotonic() < deadline, "the deployments never left prepare"
        time.sleep(0.05)
    deadline = time.monotonic() + 20
    while True:
        for copy in fleet.of("worker"):
            running = jobs_running(copy.path)
            if any(job.startswith(("start:", "finalize:")) for job in running):
                continue  # killed in these, the deployment fails, or waits out the timeout
            if any(job.startswith("notify:") for job in running) or time.monotonic() > deadline:
                kill(copy.proc.pid)
                return copy.proc.pid, running
        time.sleep(0.02)


def outside_cron_slots(rr: RoundRobin, project_id: str) -> None:
    """Wait for a moment a minute's cron run neither runs nor is about to: a monitor killed
    in the middle of one leaves it `running` until the job's timeout + 2 minutes have passed,
    and the job's next slots are then skipped (a job never overlaps itself)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        second = datetime.now(UTC).second
        runs = rr.get(f"/api/v1/projects/{project_id}/cron/runs", limit=5)["items"]
        if 12 <= second <= 40 and not any(r["status"] == "running" for r in runs):
            return
        time.sleep(0.2)
    raise AssertionError("the cron job never stopped running")


# ---- the checks -------------------------------------------------------------------------
@dataclass
class Outbox:
    events: dict[int, tuple[str, str | None]]  # event id -> (type, deployment id)
    deliveries: dict[int, NotificationDelivery]  # event id -> its delivery (one per channel)
    queued: list[str]  # job ids still queued or marked running


async def read_outbox(p: Platform, channel_id: str) -> Outbox:
    async with p.sessions() as session:
        events = {
            e.id: (e.type, e.deployment_id)
            for e in await session.scalars(
                select(DomainEvent).where(DomainEvent.type.in_(DEPLOYMENT_EVENTS))
            )
        }
        rows = list(
            await session.scalars(
                select(NotificationDelivery).where(NotificationDelivery.channel_id == channel_id)
            )
        )
    by_event: dict[int, NotificationDelivery] = {}
    for row in rows:
        assert row.event_id is not None and row.event_id not in by_event, row.event_id
        by_event[row.event_id] = row
    queued = [
        (j.decode() if isinstance(j, bytes) else j)
        for j in await p.redis.zrange(default_queue_name, 0, -1)
    ]
    queued += [
        (k.decode() if isinstance(k, bytes) else k).removeprefix(in_progress_key_prefix)
        async for k in p.redis.scan_iter(match=in_progress_key_prefix + "*")
    ]
    return Outbox(events, by_event, [j for j in queued if j.startswith(JOBS_CHECKED)])


def wait_delivered(fleet: Fleet, receiver: Receiver, channel_id: str) -> Outbox:
    """Until every deployment event has its delivery, sent, at the receiver, and no job is
    left queued or marked running (a lost attempt: its claim, 60 s, + 5 s + a sweep)."""

    async def settled(p: Platform) -> Outbox:
        deadline = time.monotonic() + 240
        while True:
            outbox = await read_outbox(p, channel_id)
            received = {r.headers["x-devpush-delivery"] for r in receiver.at("/hooks")}
            missing = [e for e in outbox.events if e not in outbox.deliveries]
            unsent = [d.id for d in outbox.deliveries.values() if d.status != "succeeded"]
            unseen = [d.id for d in outbox.deliveries.values() if d.id not in received]
            if not (missing or unsent or unseen or outbox.queued):
                return outbox
            assert time.monotonic() < deadline, (
                f"events with no delivery {missing}, deliveries not sent {unsent}, not "
                f"received {unseen}, jobs left {outbox.queued}\n{fleet.tails()}"
            )
            await asyncio.sleep(1)

    return with_platform(fleet.platform, settled)


def check_deliveries(outbox: Outbox, receiver: Receiver, secret: str) -> None:
    posts: dict[str, list[Any]] = {}
    for request in receiver.at("/hooks"):
        assert verify(secret, request), request.headers
        posts.setdefault(request.headers["x-devpush-delivery"], []).append(request)
    rows = {row.id: row for row in outbox.deliveries.values()}
    assert set(posts) == set(rows), "a delivery the platform does not know was received"
    retried = []
    for delivery_id, requests in posts.items():
        row = rows[delivery_id]
        event_type, deployment_id = outbox.events[row.event_id or 0]
        for request in requests:
            body = request.json()
            assert request.headers["x-devpush-event"] == body["event"] == event_type, body
            assert body["deployment"]["id"] == deployment_id, body
            assert request.body == requests[0].body  # a retry carries the same delivery
        # Once, unless its first attempt was lost with the killed worker: the row counts it.
        assert len(requests) <= row.attempts <= 2, (delivery_id, len(requests), row.attempts)
        if row.attempts > 1:
            retried.append((delivery_id, event_type, len(requests)))
    print(
        f"{len(posts)} deliveries, {sum(map(len, posts.values()))} posts; sent again after an "
        f"attempt lost with the killed worker (id, event, posts): {retried}"
    )
    assert len(retried) <= 10  # the killed worker ran at most max_jobs at once


def check_events(outbox: Outbox, concluded: dict[str, dict[str, Any]]) -> None:
    """Each deployment's events are those its conclusion implies (each once)."""
    by_deployment: dict[str, list[str]] = {}
    for event_type, deployment_id in outbox.events.values():
        assert deployment_id is not None
        by_deployment.setdefault(deployment_id, []).append(event_type)
    assert set(by_deployment) == set(concluded)
    for deployment_id, types in by_deployment.items():
        assert len(types) == len(set(types)), (deployment_id, types)
        conclusion = concluded[deployment_id]["conclusion"]
        last = "deployment.live" if conclusion == "succeeded" else f"deployment.{conclusion}"
        assert {"deployment.created", last} <= set(types), (deployment_id, conclusion, types)


def ticks_file(platform: RunningPlatform, project_id: str) -> Path:
    (found,) = platform.data_dir.glob(f"volumes/{project_id}/*/data/ticks")
    return found


def check_cron(rr: RoundRobin, platform: RunningPlatform, project_id: str) -> int:
    """One row per minute's slot (none missed since the job went live), each succeeded with
    one marker line in its logs and one line in the volume's file."""
    outside_cron_slots(rr, project_id)
    runs = rr.all_pages(f"/api/v1/projects/{project_id}/cron/runs", limit=100)
    slots = sorted(datetime.fromisoformat(r["scheduled_at"]) for r in runs)
    assert len(slots) == len(set(slots)) >= 2, slots
    assert all(b - a == timedelta(minutes=1) for a, b in itertools.pairwise(slots)), slots
    assert {r["status"] for r in runs} == {"succeeded"}, runs
    lines = rr.get(f"/api/v1/projects/{project_id}/logs", q=TICK_MARK, limit=1000)["items"]
    marks = Counter(line["message"] for line in lines if line["message"].endswith(TICK_MARK))
    assert marks == Counter({f"[tick #{r['id'][:8]}] {TICK_MARK}": 1 for r in runs}), marks
    assert ticks_file(platform, project_id).read_text().splitlines() == ["tick"] * len(runs)
    return len(runs)


# ---- the scenario -----------------------------------------------------------------------
def test_three_copies_of_each_share_one_database_and_redis(fleet: Fleet, tmp_path: Path) -> None:
    platform = fleet.platform
    apps = [platform.app_url, *(c.url for c in fleet.of("app"))]
    rr = RoundRobin(apps, platform.token(), platform.proxy_url)
    team = rr().team()

    with receiving() as receiver:
        # A receiver that takes its time: the killed worker is likely to be mid-attempt.
        receiver.delay["/hooks"] = 1.0
        channel = rr().post(
            f"/api/v1/teams/{team}/notifications",
            {
                "channel": "webhook",
                "url": receiver.url("/hooks"),
                "events": list(DEPLOYMENT_EVENTS),
            },
            expect=201,
        )

        ticker_repo = make_repo(tmp_path / "ticker", body="ticker")
        (ticker_repo / "devpush.toml").write_text(TICKER_TOML)
        commit(ticker_repo, "ticker")
        ticker = rr().project(ticker_repo, "ticker")
        concluded: dict[str, dict[str, Any]] = {}
        first = rr.wait(rr().deploy(ticker["id"])["id"])
        assert first["conclusion"] == "succeeded", first
        concluded[first["id"]] = first

        repos = [make_repo(tmp_path / f"repo{i}", body=f"start {i}") for i in range(PROJECTS)]
        projects = [
            rr().project(
                repo,
                f"copies-{i}",
                build_command="echo build-$((6*7)); sleep 4",
                env_vars={"START_DELAY": "3"},
            )
            for i, repo in enumerate(repos)
        ]

        # Round 1: the worker and an app are killed while the deployments build.
        ids = []
        for i, (repo, project) in enumerate(zip(repos, projects, strict=True)):
            commit(repo, f"round 1 {i}")
            ids.append(rr().deploy(project["id"])["id"])
        worker, running = kill_a_worker_mid_delivery(fleet, rr, ids)
        (app, *_) = fleet.of("app")
        kill(app.proc.pid)
        rr.drop(app.url)
        print(f"killed worker {worker} running {sorted(running)}, and app {app.proc.pid}")
        for i, deployment_id in enumerate(ids):
            deployment = rr.wait(deployment_id)
            concluded[deployment_id] = deployment
            assert deployment["conclusion"] == "succeeded", (deployment["error"], deployment)
            assert rr().body(deployment["urls"]["deployment"]) == f"round 1 {i}"

        # Round 2: a monitor is killed while the deployments start (and between cron runs).
        outside_cron_slots(rr, ticker["id"])
        ids = []
        for i, (repo, project) in enumerate(zip(repos, projects, strict=True)):
            commit(repo, f"round 2 {i}")
            ids.append(rr().deploy(project["id"])["id"])
        rr.wait_status(ids[-1], {"deploy", "completed"})
        (monitor, *_) = fleet.of("monitor")
        kill(monitor.proc.pid)
        print(f"killed monitor {monitor.proc.pid}")
        for i, deployment_id in enumerate(ids):
            deployment = rr.wait(deployment_id)
            concluded[deployment_id] = deployment
            assert deployment["conclusion"] == "succeeded", (deployment["error"], deployment)
            assert rr().body(deployment["urls"]["environment"]) == f"round 2 {i}"
        left = {name: len(fleet.of(name)) for name in ("app", "worker", "monitor")}
        assert left == {"app": COPIES - 1, "worker": COPIES - 1, "monitor": COPIES - 1}

        # Every build ran once: its marker once in its deployment's log.
        for deployment_id, deployment in concluded.items():
            if deployment["project_id"] != ticker["id"]:
                log = build_log(rr(), deployment["project_id"], deployment_id)
                assert log.count(BUILD_MARK) == 1, (deployment_id, log)

        # One more cron slot after the kills, then every slot ran once.
        killed_at = datetime.now(UTC)
        deadline = time.monotonic() + 150
        while True:
            runs = rr.get(f"/api/v1/projects/{ticker['id']}/cron/runs", limit=5)["items"]
            if any(
                datetime.fromisoformat(r["scheduled_at"]) > killed_at
                and r["status"] not in ("queued", "running")
                for r in runs
            ):
                break
            assert time.monotonic() < deadline, runs
            time.sleep(1)
        slots = check_cron(rr, platform, ticker["id"])

        outbox = wait_delivered(fleet, receiver, channel["id"])
        check_events(outbox, concluded)
        check_deliveries(outbox, receiver, channel["secret"])
    print(f"cron slots {slots}; API calls per app copy {dict(rr.calls)}")
    wait_until_sound(platform)
