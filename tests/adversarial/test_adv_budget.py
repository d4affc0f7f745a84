"""Adversarial submissions against the clock and the container's life."""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from docker_support import RUNTIMES, assert_no_leftovers, docker_client, duration, sandbox  # noqa: E402,F401

# Every attack runs under runc and under gVisor (runsc).
pytestmark = [pytest.mark.docker, pytest.mark.parametrize("sandbox", RUNTIMES, indirect=True)]

TIMEOUT = 3.0


@pytest.mark.parametrize("src", [
    "import time\nprint('sleeping', flush=True)\ntime.sleep(10**9)\n",
    "print('spinning', flush=True)\nwhile True:\n    pass\n",
    # ignores SIGTERM and SIGINT: only a kill ends it
    "import signal, time\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):\n"
    "    signal.signal(s, signal.SIG_IGN)\nprint('stubborn', flush=True)\nwhile True:\n    time.sleep(0.1)\n",
], ids=["sleep-forever", "endless-loop", "ignores-signals"])
def test_ignoring_the_budget_is_timed_out(sandbox, src):
    outcome, lines, _ = sandbox.run(src, hard_timeout_s=TIMEOUT)
    assert outcome.timed_out is True
    assert outcome.exit_code == 137
    assert not outcome.aborted and not outcome.oom_killed and outcome.infra_error is None
    assert len(lines) >= 1 and lines[-1].startswith("[harness] hard timeout of 3s reached")
    assert TIMEOUT <= duration(outcome) < TIMEOUT + 5  # the harness's clock, not the candidate's
    assert outcome.first_output_at is not None
    assert_no_leftovers(sandbox.client)  # container gone


DAEMONIZE = r'''
import os, sys, time
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork() == 0:
        # the daemon: keeps stdout open, keeps printing, keeps writing a heartbeat
        import signal
        for s in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        while True:
            with open("/out/heartbeat", "w") as f:
                f.write(repr(time.time()))
            print("daemon still here", flush=True)
            time.sleep(0.1)
    os._exit(0)
time.sleep(0.5)
print("train.py exits now", flush=True)
sys.exit(0)
'''


def test_detached_background_process_dies_with_the_run(sandbox):
    outcome, lines, req = sandbox.run(DAEMONIZE, hard_timeout_s=20)
    assert outcome.exit_code == 0
    assert not outcome.timed_out and outcome.infra_error is None
    assert "train.py exits now" in lines
    assert duration(outcome) < 8  # the daemon's open stdout did not keep the run alive
    # nothing left: no container, and the heartbeat stopped
    assert_no_leftovers(sandbox.client)
    assert sandbox.client.containers.list(all=True, filters={"label": f"harness.run_id={req.run_id}"}) == []
    beat = req.run_dir / "out" / "heartbeat"
    assert beat.exists()
    first = beat.read_text()
    time.sleep(0.6)
    assert beat.read_text() == first


def test_binary_blob_instead_of_train_py(sandbox):
    rng = random.Random(1234)
    blob = b"\x7fELF\x02\x01\x01\x00" + bytes(rng.randrange(256) for _ in range(8192))
    outcome, lines, _ = sandbox.run(blob)
    assert outcome.exit_code not in (None, 0)
    assert outcome.exit_code == 1  # python refuses the source and exits 1
    assert not outcome.timed_out and not outcome.oom_killed and outcome.infra_error is None
    assert any("SyntaxError" in line or "null bytes" in line for line in lines)
    assert duration(outcome) < 10


def test_undecodable_output_is_kept(sandbox):
    src = "import sys\nsys.stdout.buffer.write(b'\\xff\\xfe bad utf8 \\x00\\n')\nprint('after')\n"
    outcome, lines, _ = sandbox.run(src)
    assert outcome.exit_code == 0
    assert lines[-1] == "after"
    assert b"\xff\xfe bad utf8" in outcome.log_path.read_bytes()
