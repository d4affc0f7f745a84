"""Adversarial submissions against the file system and the network: nothing escapes its mounts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from docker_support import RUNTIMES, docker_client, sandbox  # noqa: E402,F401

from harness.paths import repo_root  # noqa: E402

# Every attack runs under runc and under gVisor (runsc).
pytestmark = [pytest.mark.docker, pytest.mark.parametrize("sandbox", RUNTIMES, indirect=True)]


def result_of(lines: list[str]) -> dict:
    return json.loads(next(line for line in lines if line.startswith("RESULT "))[7:])


TAMPER = r'''
import errno, json, os, shutil
results = {}
def attempt(name, fn):
    try:
        fn()
        results[name] = "SUCCEEDED"
    except OSError as e:
        results[name] = errno.errorcode.get(e.errno, str(e.errno))

def append(path, data=b"\n# tampered\n"):
    with open(path, "ab") as f:
        f.write(data)
def overwrite(path):
    with open(path, "wb") as f:
        f.write(b"tampered")

attempt("append prepare.py", lambda: append("/fixed/prepare.py"))
attempt("overwrite prepare.py", lambda: overwrite("/fixed/prepare.py"))
attempt("delete prepare.py", lambda: os.remove("/fixed/prepare.py"))
attempt("rename prepare.py", lambda: os.rename("/fixed/prepare.py", "/fixed/p.py"))
attempt("chmod prepare.py", lambda: os.chmod("/fixed/prepare.py", 0o777))
attempt("new file in /fixed", lambda: overwrite("/fixed/sitecustomize.py"))
attempt("overwrite manifest", lambda: overwrite("/data/manifest.json"))
attempt("append shard", lambda: append("/data/train/shard_000.bin"))
attempt("delete val shard", lambda: os.remove("/data/val/shard_000.bin"))
attempt("rmtree data", lambda: shutil.rmtree("/data/val"))
attempt("new file in /data", lambda: overwrite("/data/extra.bin"))
attempt("overwrite train.py", lambda: overwrite("/work/train.py"))
attempt("new file in /work", lambda: overwrite("/work/x.py"))
attempt("write root fs", lambda: overwrite("/usr/lib/python3/dist-packages/evil.py"))
attempt("write /etc", lambda: overwrite("/etc/passwd"))
attempt("write venv", lambda: overwrite("/opt/venv/lib/evil.pth"))
attempt("remount", lambda: os.system("mount -o remount,rw /fixed 2>/dev/null") and (_ for _ in ()).throw(OSError(errno.EPERM, "mount failed")))
# the places that ARE writable
attempt("write /out", lambda: overwrite("/out/ok.txt"))
attempt("write /tmp", lambda: overwrite("/tmp/ok.txt"))
print("RESULT " + json.dumps(results))
'''


def test_cannot_modify_fixed_or_data(sandbox):
    before = sandbox.hashes()
    outcome, lines, req = sandbox.run(TAMPER)
    assert outcome.exit_code == 0 and outcome.infra_error is None
    res = result_of(lines)
    writable = {"write /out", "write /tmp"}
    for name, how in res.items():
        if name in writable:
            assert how == "SUCCEEDED", (name, how)
        else:
            assert how != "SUCCEEDED", f"{name} succeeded inside the container"
            assert how in ("EROFS", "EACCES", "EPERM"), (name, how)
    assert sandbox.hashes() == before  # byte for byte
    assert (req.run_dir / "out" / "ok.txt").read_bytes() == b"tampered"
    assert (req.run_dir / "train.py").read_bytes() == req.train_py.read_bytes()


SNOOP = r'''
import json, os
paths = PATHS
seen = {}
for p in paths:
    try:
        with open(p, "rb") as f:
            seen[p] = f.read(4096).hex()
    except OSError as e:
        seen[p] = None
listing = {d: sorted(os.listdir(d)) if os.path.isdir(d) else None for d in ["/", "/work", "/fixed", "/data", "/out"]}
print("RESULT " + json.dumps({"seen": seen, "listing": listing,
      "docker_sock": os.path.exists("/var/run/docker.sock") or os.path.exists("/run/docker.sock"),
      "pid1": [a.decode(errors="replace")[:40] for a in open("/proc/1/cmdline", "rb").read().split(b"\0")[:4]],
      "nprocs": len([p for p in os.listdir("/proc") if p.isdigit()])}))
'''


def test_cannot_read_outside_mounts(sandbox, tmp_path):
    secret = tmp_path / "host-secret.txt"  # next to the mounts, not in one
    secret.write_text("host secret 42")
    secret.chmod(0o644)
    repo_file = repo_root() / "harness" / "benchmarks.py"
    targets = [str(secret), "/etc/shadow", str(repo_file), str(sandbox.root / "runs"), "/root/.bash_history",
               "/proc/1/environ"]
    outcome, lines, _ = sandbox.run(SNOOP.replace("PATHS", json.dumps(targets)))
    assert outcome.exit_code == 0 and outcome.infra_error is None
    res = result_of(lines)
    assert res["seen"][str(secret)] is None
    assert res["seen"][str(repo_file)] is None
    assert res["seen"]["/root/.bash_history"] is None
    # PID 1 is the keeper (the image's python, isolated): its environment, where a runtime lets the run
    # read it at all (runc does not: it is non-dumpable), is the container's, with no host path and
    # without the keeper's token in it
    init_env = bytes.fromhex(res["seen"]["/proc/1/environ"] or "").decode(errors="replace")
    assert str(repo_root()) not in init_env and str(tmp_path) not in init_env
    assert "HARNESS_KEEPER_TOKEN" not in init_env  # moved to a pipe before the run started
    if sandbox.runtime == "runc":
        assert res["seen"]["/proc/1/environ"] is None
    shadow = res["seen"]["/etc/shadow"]
    host_shadow = Path("/etc/shadow").read_bytes()[:4096].hex() if Path("/etc/shadow").exists() else None
    assert shadow is None or shadow != host_shadow  # the image's own, unreadable as non-root anyway
    assert res["listing"]["/work"] == ["train.py"]
    assert res["listing"]["/fixed"] == ["prepare.py"]
    assert res["listing"]["/data"] == ["manifest.json", "train", "val"]
    assert not res["docker_sock"]
    assert res["pid1"][:4] == ["python3", "-I", "-S", "-c"]
    assert res["nprocs"] <= 3  # its own pid namespace: the keeper, python (no host processes)


NET = r'''
import json, os, socket
res = {}
def attempt(name, fn):
    try:
        fn()
        res[name] = "CONNECTED"
    except OSError as e:
        res[name] = f"{type(e).__name__}: {e}"
attempt("tcp 1.1.1.1:443", lambda: socket.create_connection(("1.1.1.1", 443), timeout=2))
attempt("tcp 8.8.8.8:53", lambda: socket.create_connection(("8.8.8.8", 53), timeout=2))
attempt("dns", lambda: socket.getaddrinfo("huggingface.co", 443))
attempt("gateway 172.17.0.1", lambda: socket.create_connection(("172.17.0.1", 2375), timeout=2))
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"x", ("8.8.8.8", 53))
attempt("udp", udp)
res["interfaces"] = sorted(os.listdir("/sys/class/net"))
print("RESULT " + json.dumps(res))
'''


def test_no_network(sandbox):
    outcome, lines, _ = sandbox.run(NET)
    assert outcome.exit_code == 0
    res = result_of(lines)
    for name in ("tcp 1.1.1.1:443", "tcp 8.8.8.8:53", "dns", "gateway 172.17.0.1", "udp"):
        assert res[name] != "CONNECTED", name
    assert res["interfaces"] == ["lo"]
