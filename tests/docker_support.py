"""Shared fixtures for the docker tests (tests/test_docker_backend.py, tests/adversarial/).

Not a conftest.py: test modules import what they use, e.g.

    from docker_support import IMAGE, docker_client, sandbox, run_candidate  # noqa: F401

(the modules put tests/ on sys.path first, so this works however pytest is started).

Without a reachable daemon (or without the image) the tests SKIP with the reason, except when
the environment says CI=true: then they FAIL, because CI must run them.

Runtimes: `sandbox` runs its containers under runc unless parametrized indirectly, e.g. for a whole
module (tests/adversarial/ does this, so every attack runs under runc and under gVisor):

    pytestmark = [pytest.mark.docker, pytest.mark.parametrize("sandbox", RUNTIMES, indirect=True)]

A runtime dockerd lacks skips (fails under CI=true: `.ci/docker-up` registers runsc).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from harness.backends.base import ProcessOutcome, RunRequest
from harness.benchmarks import Limits, load_benchmarks

# HARNESS_TEST_IMAGE points the tests at another build (e.g. while :latest is being rebuilt).
IMAGE = os.environ.get("HARNESS_TEST_IMAGE", "harness-cpu:latest")

# Every container the tests start has a run id with this prefix, so the leftover checks see
# only this session's containers even when other harness runs share the daemon.
SESSION_PREFIX = f"pytest-{secrets.token_hex(3)}"

# Small limits: the tests are fast and the adversaries hit the caps quickly.
TEST_LIMITS = Limits(memory="256m", shm="16m", pids=64, tmpfs="16m", output="16m", cpus=1.0)

# The OCI runtimes the container tests run under: runc (dockerd's default) and gVisor's runsc.
RUNTIMES = ("runc", "runsc")
# Under runsc the pids cgroup counts the sandbox's host threads (gVisor's Sentry and its stubs), not the
# run's processes: below about 96 even `docker exec` (the copy of /out) fails, so its sandboxes get at
# least this many.
RUNSC_MIN_PIDS = 128

FAKE_PREPARE = '''\
"""A stand-in for fixed/prepare.py: the real one's env handling, none of its work."""
import json, os
BENCHMARK = os.environ.get("HARNESS_BENCHMARK")
DATA_DIR = os.environ.get("HARNESS_DATA_DIR")
TIME_BUDGET = float(os.environ.get("HARNESS_TIME_BUDGET", "0"))
MANIFEST = json.load(open(os.path.join(DATA_DIR, "manifest.json"))) if DATA_DIR else None
'''


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _unavailable(reason: str) -> None:
    if _in_ci():
        pytest.fail(f"{reason} (CI=true: the docker tests must run here)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_client():
    """A connected docker client with IMAGE present; skip (fail under CI=true) otherwise."""
    from harness.backends.docker.client import from_env

    try:
        client = from_env(timeout=30)  # a busy daemon (an image import) can be slow
        client.ping()
    except ImportError:  # pragma: no cover
        _unavailable("the docker SDK is not installed")
    except Exception as e:  # noqa: BLE001
        _unavailable(f"no Docker daemon reachable ({e.__class__.__name__}): start dockerd (see .ci/docker-up)")
    try:
        client.images.get(IMAGE)
    except Exception as e:  # noqa: BLE001
        _unavailable(f"image {IMAGE} not available ({e.__class__.__name__}): run `harness image build cpu`")
    yield client
    leftovers = session_containers(client)
    for c in leftovers:
        c.remove(force=True)
    client.close()


def session_containers(client) -> list:
    """This test session's harness containers that still exist."""
    found = client.containers.list(all=True, filters={"label": "harness=1"})
    return [c for c in found if c.labels.get("harness.run_id", "").startswith(SESSION_PREFIX)]


def assert_no_leftovers(client) -> None:
    left = session_containers(client)
    names = [c.name for c in left]
    for c in left:
        c.remove(force=True)
    assert not names, f"containers left behind: {names}"


def sha256_tree(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def require_runtime(client, runtime: str) -> None:
    """Skip (fail under CI=true) unless dockerd has `runtime` registered."""
    if runtime == "runc":
        return
    runtimes = client.info().get("Runtimes") or {}
    if runtime not in runtimes:
        _unavailable(f"container runtime {runtime!r} is not registered with dockerd (it has: "
                     f"{', '.join(sorted(runtimes))}): run `sudo bash .ci/docker-up` to install and register gVisor")


@dataclass
class Sandbox:
    """A tiny fake fixed/ and data cache in tmp_path, plus a runner for candidates."""

    root: Path
    fixed_dir: Path
    data_dir: Path
    client: Any
    runs: list[RunRequest] = field(default_factory=list)
    runtime: str = "runc"

    def backend(self, **kw):
        from harness.backends.docker import DockerBackend

        return DockerBackend(client=self.client, image=IMAGE, runtime=self.runtime, **kw)

    def hashes(self) -> dict[str, dict[str, str]]:
        return {"fixed": sha256_tree(self.fixed_dir), "data": sha256_tree(self.data_dir)}

    def request(self, source: str | bytes, *, hard_timeout_s: float = 20.0, limits: Limits | None = None,
                log_cap_bytes: int = 1 << 20, command: list[str] | None = None,
                gpu_uuids: list[str] | None = None, name: str = "run") -> RunRequest:
        n = len(self.runs)
        run_id = f"{SESSION_PREFIX}-{name}-{n}"
        sub = self.root / "submissions" / f"{name}-{n}"
        sub.mkdir(parents=True)
        train_py = sub / "train.py"
        if isinstance(source, bytes):
            train_py.write_bytes(source)
        else:
            train_py.write_text(source)
        limits = limits or TEST_LIMITS
        if self.runtime == "runsc" and limits.pids < RUNSC_MIN_PIDS:
            limits = dataclasses.replace(limits, pids=RUNSC_MIN_PIDS)
        bench = dataclasses.replace(load_benchmarks()["tiny"], limits=limits)
        run_dir = self.root / "runs" / run_id
        req = RunRequest(
            run_id=run_id,
            train_py=train_py,
            benchmark=bench,
            data_dir=self.data_dir,
            fixed_dir=self.fixed_dir,
            run_dir=run_dir,
            env={
                "HARNESS_BENCHMARK": bench.name,
                "HARNESS_DATA_DIR": str(self.data_dir),
                "HARNESS_OUT_DIR": str(run_dir / "out"),
                "HARNESS_TIME_BUDGET": "2.0",
                "HARNESS_SEED": "1",
                "HARNESS_MODEL_HINT": "{}",
            },
            hard_timeout_s=hard_timeout_s,
            gpu_uuids=list(gpu_uuids or []),
            log_cap_bytes=log_cap_bytes,
            command=command,
        )
        self.runs.append(req)
        return req

    def run(self, source: str | bytes, *, backend=None, on_line: Callable[[str], None] | None = None,
            **kw) -> tuple[ProcessOutcome, list[str], RunRequest]:
        req = self.request(source, **kw)
        lines: list[str] = []

        def collect(line: str) -> None:
            lines.append(line)
            if on_line is not None:
                on_line(line)

        backend = backend or self.backend()
        outcome = backend.execute(req, collect)
        return outcome, lines, req


@pytest.fixture
def sandbox(request, docker_client, tmp_path):
    """A Sandbox (runc, or the runtime given by indirect parametrization); after the test, no container
    of this session may be left."""
    runtime = getattr(request, "param", None) or "runc"
    require_runtime(docker_client, runtime)
    fixed = tmp_path / "fixed"
    fixed.mkdir()
    (fixed / "prepare.py").write_text(FAKE_PREPARE)
    data = tmp_path / "cache" / "tiny"
    (data / "train").mkdir(parents=True)
    (data / "val").mkdir()
    (data / "manifest.json").write_text('{"benchmark": "tiny", "secret": "do-not-change"}')
    (data / "train" / "shard_000.bin").write_bytes(bytes(range(256)) * 16)
    (data / "val" / "shard_000.bin").write_bytes(bytes(range(256)) * 4)
    for p in [fixed, data, *data.rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    box = Sandbox(root=tmp_path, fixed_dir=fixed, data_dir=data, client=docker_client, runtime=runtime)
    yield box
    assert_no_leftovers(docker_client)


def duration(outcome: ProcessOutcome) -> float:
    return outcome.ended_at - outcome.started_at


def wait_until(pred: Callable[[], bool], timeout: float = 5.0, step: float = 0.1) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()
