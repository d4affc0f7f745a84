"""Adversarial submissions against the resource limits: contained, recorded, harness unharmed."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import secrets
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from docker_support import TEST_LIMITS, docker_client, duration, sandbox, wait_until  # noqa: E402,F401

from harness.backends.docker import dir_usage  # noqa: E402
from harness.benchmarks import size_bytes  # noqa: E402

pytestmark = pytest.mark.docker


def result_of(lines: list[str]) -> dict:
    return json.loads(next(line for line in lines if line.startswith("RESULT "))[7:])


def host_processes_with(marker: str) -> list[int]:
    """Host pids whose command line holds `marker` (container processes are host processes too)."""
    found = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(p))
            except OSError:
                pass
    return found


FORK_BOMB = r'''
import os, sys, time
print("bombing", flush=True)
told = False
while True:
    try:
        os.fork()
    except OSError as e:
        if not told:
            print(f"fork refused: {e.__class__.__name__} errno={e.errno}", flush=True)
            told = True
        time.sleep(0.01)
'''


def test_fork_bomb_is_contained(sandbox):
    marker = f"forkbomb-{secrets.token_hex(4)}"  # every bomb process carries it in its argv
    limits = dataclasses.replace(TEST_LIMITS, pids=32)
    seen = []

    def on_line(line):
        if line == "bombing":
            seen.extend(host_processes_with(marker))

    outcome, lines, _ = sandbox.run(FORK_BOMB, limits=limits, hard_timeout_s=4, on_line=on_line,
                                    command=["python3", "-u", "/work/train.py", marker])
    assert outcome.timed_out is True
    assert outcome.exit_code == 137  # SIGKILL from the harness
    assert outcome.infra_error is None
    assert any(line.startswith("fork refused: BlockingIOError") for line in lines)  # the pids cap bit
    assert 4 <= duration(outcome) < 4 + 6
    assert seen  # the marker does find the candidate's processes while it runs
    assert wait_until(lambda: host_processes_with(marker) == [], timeout=5)  # all gone from the host
    assert outcome.log_path.exists()


MEMORY_BOMB = r'''
import time
print("allocating", flush=True)
hog = []
while True:
    hog.append(bytearray(8 << 20))  # zero-filled: really resident
'''


def test_memory_bomb_is_oom_killed(sandbox):
    limits = dataclasses.replace(TEST_LIMITS, memory="96m")
    outcome, lines, _ = sandbox.run(MEMORY_BOMB, limits=limits, hard_timeout_s=30)
    assert outcome.oom_killed is True
    assert outcome.exit_code == 137
    assert not outcome.timed_out and outcome.infra_error is None
    assert lines[0] == "allocating"
    assert duration(outcome) < 20


FILL = r'''
import errno, json, os, sys
target = sys.argv[1] if len(sys.argv) > 1 else "/tmp"
res = {}
for d in ["/tmp", "/dev/shm"]:
    total = 0
    try:
        with open(os.path.join(d, "fill"), "wb") as f:
            while True:
                f.write(b"\xff" * (1 << 20))
                f.flush()
                total += 1 << 20
    except OSError as e:
        res[d] = {"errno": errno.errorcode.get(e.errno), "written": total}
print("RESULT " + json.dumps(res))
'''


def test_filling_tmp_and_shm_hits_enospc(sandbox):
    limits = dataclasses.replace(TEST_LIMITS, tmpfs="8m", shm="4m", memory="256m")
    outcome, lines, _ = sandbox.run(FILL, limits=limits)
    assert outcome.exit_code == 0, lines
    res = result_of(lines)
    assert res["/tmp"]["errno"] == "ENOSPC"
    assert res["/tmp"]["written"] <= size_bytes("8m")
    assert res["/dev/shm"]["errno"] == "ENOSPC"
    assert res["/dev/shm"]["written"] <= size_bytes("4m")


FILL_OUT = r'''
import time
print("filling /out", flush=True)
n = 0
with open("/out/fill.bin", "wb") as f:
    while True:
        f.write(b"\x00\x01" * (1 << 19))  # 1 MiB
        f.flush()
        n += 1
        if n % 4 == 0:
            time.sleep(0.05)  # ~80 MB/s: keeps the test light on a shared disk
'''


def test_filling_output_dir_is_capped(sandbox):
    limits = dataclasses.replace(TEST_LIMITS, output="8m")
    outcome, lines, req = sandbox.run(FILL_OUT, limits=limits, hard_timeout_s=30)
    assert not outcome.timed_out
    assert outcome.exit_code == 137
    assert getattr(outcome, "kill_reason", "output_limit") == "output_limit"
    log = outcome.log_path.read_text()
    assert "[harness] output directory passed its limit of 8m" in log
    assert any("output directory passed its limit" in line for line in lines)
    used = dir_usage(req.run_dir / "out")
    # killed within about one poll interval (0.5 s) of passing the cap
    assert size_bytes("8m") < used < size_bytes("8m") + 80 * (1 << 20)
    assert duration(outcome) < 10


def test_many_small_files_in_output_dir_are_capped(sandbox):
    """An inode flood: every file costs at least 4 KiB against the cap."""
    src = "import os\nfor i in range(10**6):\n    open(f'/out/f{i}', 'w').close()\n"
    limits = dataclasses.replace(TEST_LIMITS, output="4m")
    outcome, _, req = sandbox.run(src, limits=limits, hard_timeout_s=30)
    assert outcome.exit_code == 137 and not outcome.timed_out
    assert "output directory passed its limit" in outcome.log_path.read_text()
    assert len(os.listdir(req.run_dir / "out")) < 200_000


FLOOD = r'''
import sys
line = "flood " + "x" * 1018 + "\n"   # 1 KiB lines
w = sys.stdout.write
for i in range(80 * 1024):            # 80 MiB
    w(line)
sys.stdout.flush()
print("---")
print("val_bpb:          9.999999")
'''


def _rss_reset() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (peak RSS)
        return True
    except OSError:
        return False


def _vm(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def test_stdout_flood_is_capped(sandbox):
    cap = 1 << 20
    rss_before = _vm("VmRSS")
    can_measure = _rss_reset()
    count = 0

    def on_line(line):
        nonlocal count
        count += 1

    outcome, lines, _ = sandbox.run(FLOOD, log_cap_bytes=cap, on_line=on_line, hard_timeout_s=60)
    peak = _vm("VmHWM")
    assert outcome.exit_code == 0 and not outcome.timed_out and outcome.infra_error is None
    assert outcome.log_truncated is True
    size = outcome.log_path.stat().st_size
    assert size <= cap + 1024
    tail = outcome.log_path.read_text().splitlines()
    assert tail[-1] == "val_bpb:          9.999999"  # the summary block survives in the tail
    assert lines[-1] == "val_bpb:          9.999999"
    assert count < 2 * cap // 1024 + 100  # on_line was not handed 80k lines
    if can_measure:
        assert peak - rss_before < 64 * (1 << 20)  # the harness's memory stayed bounded
