"""Runs one process-runtime instance in two stages, outside its sandbox: the build stage under
the build's limits, then the app under its own. Standard library only (it starts for every
deployment); it never imports devpush.

    python3 -I driver.py INSTANCE_DIR

`INSTANCE_DIR/stages.json` (written by the runtime, mode 0600; platform paths only, never user
data) holds, per stage, the cgroup.procs files to join and the argv to run:
{"build": {"cgroups": [...], "argv": [...]} | null, "run": {"cgroups": [...], "argv": [...]}}.
The driver joins the build cgroups, runs the build and waits; on success it joins the app's
cgroups and execs the app stage, so the instance's pid stays the same from start to end.
"""

import json
import os
import subprocess
import sys


def join(cgroup_procs: list[str]) -> None:
    for path in cgroup_procs:
        with open(path, "w") as f:
            f.write(str(os.getpid()))


def main() -> int:
    with open(os.path.join(sys.argv[1], "stages.json")) as f:
        stages = json.load(f)
    build = stages.get("build")
    if build:
        join(build["cgroups"])
        code = subprocess.call(build["argv"], close_fds=True)
        if code != 0:
            return code if code > 0 else 128 - code
    run = stages["run"]
    join(run["cgroups"])
    os.execv(run["argv"][0], run["argv"])
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())
