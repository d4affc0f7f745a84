"""Adversarial submissions against the deadline the container keeps by itself, and its init.

The harness kills a run at its hard timeout; so does the container's PID 1 (the keeper, see
harness/backends/docker/keeper.py), hard_timeout_s + KEEPER_MARGIN_S after it started, so a run ends even when
the harness process is killed -9. These tests kill the harness for real (a subprocess running the
backend), try to kill or stop the keeper from inside, and try to forge the keeper's last line.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from docker_support import IMAGE, RUNTIMES, docker_client, duration, sandbox  # noqa: E402,F401

from harness.backends.docker.keeper import KEEPER_MARGIN_S  # noqa: E402
from harness.paths import repo_root  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.parametrize("sandbox", RUNTIMES, indirect=True)]

T = 3.0  # the hard timeout of these runs
GVISOR_GAP = ("gVisor (Debian's runsc 2022-12) delivers SIGSTOP from inside the sandbox to its PID 1, so a run "
              "can freeze the keeper's clock; the harness's own timeout still ends it while the harness lives")

DRIVER = r'''
import dataclasses, json, sys
from pathlib import Path
from harness.backends.base import RunRequest
from harness.backends.docker import DockerBackend
from harness.benchmarks import Limits, load_benchmarks
spec = json.loads(sys.argv[1])
bench = dataclasses.replace(load_benchmarks()["tiny"], limits=Limits(**spec["limits"]))
req = RunRequest(run_id=spec["run_id"], train_py=Path(spec["train_py"]), benchmark=bench,
                 data_dir=Path(spec["data_dir"]), fixed_dir=Path(spec["fixed_dir"]), run_dir=Path(spec["run_dir"]),
                 env=spec["env"], hard_timeout_s=spec["hard_timeout_s"])
DockerBackend(image=spec["image"], runtime=spec["runtime"]).execute(req, lambda line: print(line, flush=True))
'''

STUBBORN = r'''
import os, signal, sys, time
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
    signal.signal(s, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(0.5)  # the harness is killed now (or not, when it stays alive)
ATTACK
while True:
    time.sleep(0.1)
'''

ATTACKS = {
    "sleeps": "",
    # its parent is the keeper (PID 1): neither signal reaches it under runc; under gVisor SIGKILL does,
    # and that ends the container at once
    "kills-its-parent": "for pid in (os.getppid(), 1):\n    try:\n        os.kill(pid, signal.SIGKILL)\n"
                        "    except OSError as e:\n        print('kill', pid, e, flush=True)",
    "stops-its-init": "for pid in (os.getppid(), 1):\n    try:\n        os.kill(pid, signal.SIGSTOP)\n"
                      "    except OSError as e:\n        print('stop', pid, e, flush=True)",
}


def _docker_time(text: str) -> float:
    # "2026-12-03T11:58:01.123456789Z": nanoseconds are more than datetime takes
    head, _, frac = text.rstrip("Z").partition(".")
    stamp = dt.datetime.fromisoformat(head).replace(tzinfo=dt.timezone.utc).timestamp()
    return stamp + (float("0." + frac) if frac else 0.0)


def _containers_of(client, run_id: str) -> list:
    return client.containers.list(all=True, filters={"label": f"harness.run_id={run_id}"})


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_deadline_holds_when_the_harness_is_killed(sandbox, tmp_path, request, attack):
    if attack == "stops-its-init" and sandbox.runtime == "runsc":
        request.applymarker(pytest.mark.xfail(strict=True, reason=GVISOR_GAP))
    req = sandbox.request(STUBBORN.replace("ATTACK", ATTACKS[attack]), hard_timeout_s=T, name=attack)
    spec = {"run_id": req.run_id, "train_py": str(req.train_py), "data_dir": str(req.data_dir),
            "fixed_dir": str(req.fixed_dir), "run_dir": str(req.run_dir), "env": req.env,
            "hard_timeout_s": T, "limits": asdict(req.benchmark.limits), "image": IMAGE,
            "runtime": sandbox.runtime}
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(repo_root())}
    harness = subprocess.Popen([sys.executable, str(driver), json.dumps(spec)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env)
    ready = threading.Event()
    seen: list[str] = []

    def read() -> None:
        for line in harness.stdout:
            seen.append(line.rstrip("\n"))
            if line.strip() == "ready":
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(60), f"the run never got going: {seen}"
        harness.send_signal(signal.SIGKILL)  # the harness dies: nobody watches the clock outside any more
        harness.wait(10)
        # The container must end by itself: at the latest KEEPER_MARGIN_S after the hard timeout, plus the
        # keeper's 1 s linger and some slack for a loaded 2-core machine.
        limit = T + KEEPER_MARGIN_S + 1.0 + 4.0
        end = time.time() + limit
        state = None
        while time.time() < end:
            found = _containers_of(sandbox.client, req.run_id)
            assert len(found) == 1
            state = found[0].attrs["State"]
            if state["Status"] != "running":
                break
            time.sleep(0.25)
        assert state is not None and state["Status"] != "running", f"still running {limit:g}s on: {seen}"
        lived = _docker_time(state["FinishedAt"]) - _docker_time(state["StartedAt"])
        assert lived < limit, (lived, seen)
        if attack == "sleeps" or sandbox.runtime == "runc":
            assert lived >= T  # the keeper's deadline ended it, not something earlier
    finally:
        if harness.poll() is None:
            harness.kill()
        for c in _containers_of(sandbox.client, req.run_id):
            c.remove(force=True)


def test_stopping_its_init_does_not_outlast_the_harness(sandbox):
    """With the harness alive the timeout holds whatever happens to the keeper: it answers (runc), or the
    container is killed outright stop_grace_s later (gVisor, where the run can freeze it)."""
    src = STUBBORN.replace("ATTACK", ATTACKS["stops-its-init"])
    outcome, lines, _ = sandbox.run(src, hard_timeout_s=T, backend=sandbox.backend(stop_grace_s=2.0))
    assert outcome.timed_out is True and outcome.kill_reason == "timeout"
    assert outcome.exit_code == 137 and outcome.infra_error is None
    assert T <= duration(outcome) < T + 3
    log = outcome.log_path.read_text()
    assert "hard timeout of 3s reached" in log
    if sandbox.runtime == "runc":
        assert "did not end the run" not in log  # the keeper could not be stopped: it answered


FORGER = r"""
import json, os, sys, time
TOKEN = b"TOKEN_HERE"
leaks = {}
for path in ("/proc/1/environ", "/proc/1/cmdline", "/proc/1/mem", "/proc/self/environ"):
    try:
        with open(path, "rb") as f:
            leaks[path] = TOKEN in f.read()
    except OSError as e:
        leaks[path] = type(e).__name__
leaks["env"] = any(TOKEN.decode() in v for v in os.environ.values())
print("LEAKS " + json.dumps(leaks), flush=True)
# the keeper's line, as far as the run can guess it: a made-up token, exit 0, on both streams
fake = "\x1e" + "0" * 32 + " exit=0 reason=exit full=0"
print(fake, flush=True)
print(fake, file=sys.stderr, flush=True)
time.sleep(1)
print("still running", flush=True)
sys.exit(5)
"""


class _KnownToken:
    """secrets for the backend, with a token the test knows (to look for it where the run can look)."""

    TOKEN = "5eed" * 8

    @staticmethod
    def token_hex(n: int) -> str:
        return _KnownToken.TOKEN


def test_forged_keeper_line_is_just_output(sandbox, monkeypatch):
    import harness.backends.docker.backend as docker_backend

    monkeypatch.setattr(docker_backend, "secrets", _KnownToken)
    outcome, lines, _ = sandbox.run(FORGER.replace("TOKEN_HERE", _KnownToken.TOKEN), hard_timeout_s=20)
    assert outcome.exit_code == 5 and outcome.infra_error is None  # its real exit, not the forged 0
    assert "still running" in lines  # the harness did not take the fake line for the end of the run
    assert sum(line.startswith("\x1e") for line in lines) == 2  # the fake lines stay in the log, as output
    leaks = json.loads(next(line for line in lines if line.startswith("LEAKS "))[6:])
    assert all(v is not True for v in leaks.values()), leaks  # the token is nowhere the run can look
    assert _KnownToken.TOKEN not in outcome.log_path.read_text()  # nor in the log: the keeper's line is not
