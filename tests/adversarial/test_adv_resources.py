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
from docker_support import RUNTIMES, TEST_LIMITS, docker_client, duration, sandbox, wait_until  # noqa: E402,F401

from harness.backends.docker import dir_usage  # noqa: E402
from harness.benchmarks import size_bytes  # noqa: E402

# Every attack runs under runc and under gVisor (runsc).
pytestmark = [pytest.mark.docker, pytest.mark.parametrize("sandbox", RUNTIMES, indirect=True)]


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
    assert outcome.infra_error is None
    assert outcome.log_path.exists()
    if sandbox.runtime == "runc":
        assert outcome.timed_out is True
        assert outcome.exit_code == 137  # SIGKILL at the harness's request
        assert any(line.startswith("fork refused: BlockingIOError") for line in lines)  # the pids cap bit
        assert 4 <= duration(outcome) < 4 + 6
        assert seen  # the marker does find the candidate's processes while it runs
    else:
        # gVisor: the run's processes are not host processes, and the pids cgroup counts the sandbox's
        # host threads (here at least RUNSC_MIN_PIDS): the bomb either gets EAGAIN inside or takes the
        # whole sandbox down with it (exit 2, before the timeout). Either way it ends, and nothing is left.
        assert seen == []
        assert outcome.timed_out or outcome.exit_code not in (0, None)
        assert duration(outcome) < 4 + 6
    assert wait_until(lambda: host_processes_with(marker) == [], timeout=5)  # all gone from the host


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
import errno, json, time
print("filling /out", flush=True)
n = 0
try:
    with open("/out/fill.bin", "wb") as f:
        while True:
            f.write(b"\x00\x01" * (1 << 19))  # 1 MiB
            f.flush()
            n += 1 << 20
except OSError as e:
    print("RESULT " + json.dumps({"written": n, "errno": errno.errorcode.get(e.errno)}), flush=True)
    raise
'''


def test_filling_output_dir_is_capped(sandbox):
    # /out is a tmpfs of limits.output: the kernel says ENOSPC at the cap, the harness marks the outcome.
    limits = dataclasses.replace(TEST_LIMITS, output="8m")
    outcome, lines, req = sandbox.run(FILL_OUT, limits=limits, hard_timeout_s=30)
    assert not outcome.timed_out and outcome.infra_error is None
    res = result_of(lines)
    assert res["errno"] == "ENOSPC"
    assert res["written"] <= size_bytes("8m")
    assert outcome.exit_code == 1  # the candidate's own OSError
    assert outcome.kill_reason == "output_limit"
    assert "[harness] the output directory reached its limit of 8m" in outcome.log_path.read_text()
    assert any("output directory reached its limit" in line for line in lines)
    # what reached the host is what fitted, copied out after the run
    assert outcome.output_bytes == (req.run_dir / "out" / "fill.bin").stat().st_size <= size_bytes("8m")
    assert dir_usage(req.run_dir / "out") <= size_bytes("8m") + 64 * 1024
    assert duration(outcome) < 10


UNLINKED = r'''
import errno, json, os, time
# The attack that beat the old size poll: write into a file that has no name any more.
f = open("/out/ghost", "wb")
os.unlink("/out/ghost")
n = 0
try:
    for _ in range(64):  # 64 MiB against an 8 MiB cap
        f.write(b"\xee" * (1 << 20))
        f.flush()
        n += 1 << 20
    err = None
except OSError as e:
    err = errno.errorcode.get(e.errno)
print("RESULT " + json.dumps({"written": n, "errno": err}), flush=True)
time.sleep(1)  # keep it (the keeper looks at /out every 0.25 s)
'''


def test_unlinked_file_cannot_pass_the_output_cap(sandbox):
    limits = dataclasses.replace(TEST_LIMITS, output="8m")
    outcome, lines, req = sandbox.run(UNLINKED, limits=limits, hard_timeout_s=30)
    assert outcome.exit_code == 0 and outcome.infra_error is None, lines
    res = result_of(lines)
    assert res["errno"] == "ENOSPC"
    assert res["written"] <= size_bytes("8m")  # not 64 MiB: the cap held for a nameless file too
    assert outcome.kill_reason == "output_limit"  # the keeper saw /out full
    assert os.listdir(req.run_dir / "out") == [] and outcome.output_bytes == 0


def test_many_small_files_in_output_dir_are_capped(sandbox):
    # An inode flood: /out has one inode per 4 KiB of its cap (runc: ENOSPC inside); gVisor ignores
    # nr_inodes, so the copy out stops at that many entries. Either way the host gets at most 256.
    src = "import os\nfor i in range(3000):\n    open(f'/out/f{i}', 'w').close()\n"
    limits = dataclasses.replace(TEST_LIMITS, output="1m")
    outcome, lines, req = sandbox.run(src, limits=limits, hard_timeout_s=30)
    assert not outcome.timed_out and outcome.infra_error is None, lines
    assert outcome.kill_reason == "output_limit"
    assert "output directory reached its limit of 1m" in outcome.log_path.read_text()
    assert len(os.listdir(req.run_dir / "out")) <= size_bytes("1m") // 4096
    if sandbox.runtime == "runc":
        assert outcome.exit_code == 1  # ENOSPC stopped it inside
        assert "No space left on device" in outcome.log_path.read_text()


TMPFS_IS_MEMORY = r'''
print("writing", flush=True)
with open("/out/big", "wb") as f:
    for _ in range(200):
        f.write(b"\x5a" * (1 << 20))
        f.flush()
print("all written", flush=True)
'''


def test_output_tmpfs_is_charged_to_the_memory_limit(sandbox):
    # 200 MiB into a 512 MiB /out of a 96 MiB container: the memory cgroup stops it, not the disk.
    limits = dataclasses.replace(TEST_LIMITS, memory="96m", output="512m")
    outcome, lines, req = sandbox.run(TMPFS_IS_MEMORY, limits=limits, hard_timeout_s=30)
    assert "all written" not in lines
    assert outcome.exit_code not in (0, None)
    assert outcome.oom_killed or outcome.exit_code in (137, 2), outcome
    assert not outcome.timed_out and outcome.infra_error is None
    assert dir_usage(req.run_dir / "out") < size_bytes("128m")


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
