"""A steady request rate through Traefik with `wrk` (a Python client cannot hold 200 requests
a second on a busy 2-core machine): each connection waits between requests, so that
`connections * 1000 / (pause + latency)` comes to about the rate asked for."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

SCRIPT = """\
local hosts = {%(hosts)s}
local threads = {}
local n = 0
setup = function(thread) table.insert(threads, thread) end
init = function() failed = {} end
request = function()
  n = n %% #hosts + 1
  return wrk.format("GET", "/", {Host = hosts[n]})
end
delay = function() return %(pause)d end
response = function(status, headers, body)
  if status >= 400 and #failed < 5 then
    table.insert(failed, status .. " " .. string.sub(body or "", 1, 120))
  end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%%d connect=%%d read=%%d write=%%d status=%%d timeout=%%d\\n",
    summary.requests, e.connect, e.read, e.write, e.status, e.timeout))
  for _, thread in ipairs(threads) do
    for _, line in ipairs(thread:get("failed")) do
      io.write("FAILED " .. string.gsub(line, "\\n", " ") .. "\\n")
    end
  end
end
"""
RESULT = re.compile(r"RESULT (.*)")
FAILED = re.compile(r"^FAILED (.*)$", re.M)


class SteadyLoad:
    """Runs wrk against `hosts` (by Host header) until the block ends; then `failures` counts
    connection errors, timeouts and HTTP statuses >= 400 (wrk's "errors")."""

    def __init__(self, proxy_url: str, hosts: list[str], workdir: Path, *, rate: int = 200) -> None:
        wrk = shutil.which("wrk")
        assert wrk, "wrk is not installed: run scripts/test-setup.sh"
        self.wrk, self.proxy_url, self.hosts, self.rate = wrk, proxy_url, hosts, rate
        self.script = workdir / "steady.lua"
        self.connections = 32
        self.counts: dict[str, int] = {}
        self.output = ""
        self.elapsed = 0.0
        # Measure the latency at this load for a few seconds, then pause between requests
        # just long enough to come to the rate.
        pause = int(self.connections * 1000 / rate)
        achieved = self._run(pause, seconds=3) / 3
        latency = max(0.0, self.connections * 1000 / max(achieved, 1) - pause)
        self.pause = max(0, int(self.connections * 1000 / rate - latency))

    def _argv(self, pause: int, seconds: int) -> list[str]:
        hosts = ", ".join(f'"{h}"' for h in self.hosts)
        self.script.write_text(SCRIPT % {"hosts": hosts, "pause": pause})
        return [
            self.wrk, "-t", "2", "-c", str(self.connections), "-d", f"{seconds}s",
            "--timeout", "10s", "-s", str(self.script), self.proxy_url,
        ]  # fmt: skip

    def _run(self, pause: int, seconds: int) -> int:
        out = subprocess.run(
            self._argv(pause, seconds), capture_output=True, text=True, timeout=seconds + 60
        ).stdout
        found = RESULT.search(out)
        assert found, out
        return int(found.group(1).split()[0].split("=")[1])

    def __enter__(self) -> SteadyLoad:
        self._started = time.monotonic()
        self._proc = subprocess.Popen(
            self._argv(self.pause, 900), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._proc.send_signal(signal.SIGINT)  # wrk stops and prints its summary
        self.output, _ = self._proc.communicate(timeout=60)
        self.elapsed = time.monotonic() - self._started
        found = RESULT.search(self.output)
        assert found, self.output
        self.counts = {k: int(v) for k, v in (p.split("=") for p in found.group(1).split())}

    @property
    def requests(self) -> int:
        return self.counts["requests"]

    @property
    def failures(self) -> int:
        return sum(v for k, v in self.counts.items() if k != "requests")

    def summary(self) -> str:
        return (
            f"{self.requests} requests in {self.elapsed:.0f}s "
            f"({self.requests / self.elapsed:.0f}/s, pausing {self.pause} ms on each of "
            f"{self.connections} connections), {self.failures} failed {self.counts}; "
            f"first failed answers: {FAILED.findall(self.output)}"
        )
