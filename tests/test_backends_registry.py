"""The backend registry: built-ins, a third-party backend found through a real entry point, and the
promise that nothing outside harness/backends/ needs the Docker SDK."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.backends import ENTRY_POINT_GROUP, UnknownBackend, backend_names, create_backend
from harness.backends.local import LocalBackend
from harness.cli import app
from harness.pipeline import RunError, make_backend
from tests.conftest import REPO

TOY = REPO / "tests" / "cases" / "toy_train.py"

FAKEMOD = '''
import dataclasses

from harness.backends.local import LocalBackend


class FakeBackend:
    """A third party's backend: runs like the local one, under its own name."""

    name = "fake"
    isolated = False

    def __init__(self, **options):
        self.options = options

    def execute(self, request, on_line):
        return dataclasses.replace(LocalBackend().execute(request, on_line), backend=self.name)


def make(**options):
    return FakeBackend(**options)
'''


@pytest.fixture
def fake_dist(tmp_path, monkeypatch):
    """An installed distribution on sys.path whose entry point declares the backend "fake"."""
    site = tmp_path / "site"
    info = site / "harness_fake-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: harness-fake\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nfake = fakemod:make\n"
                                           "Bad_Name = fakemod:make\nlocal = fakemod:make\n")
    (site / "fakemod.py").write_text(FAKEMOD)
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("fakemod", None)


def test_builtins():
    assert backend_names()[:2] == ["local", "docker"]
    assert isinstance(create_backend("local"), LocalBackend)
    assert create_backend("local").isolated is False
    from harness.backends.docker import DockerBackend

    docker = create_backend("docker", image="harness-cpu:latest", runtime="runsc")
    assert isinstance(docker, DockerBackend) and docker.isolated is True
    assert (docker.image, docker.runtime) == ("harness-cpu:latest", "runsc")


def test_unknown_backend_lists_the_registered_names():
    with pytest.raises(UnknownBackend, match=r"unknown backend 'nosuch'; registered backends: local, docker"):
        create_backend("nosuch")
    with pytest.raises(RunError, match=r"unknown backend 'nosuch': use auto or a registered backend: local, docker"):
        make_backend("nosuch")


def test_auto_and_runtimes(monkeypatch):
    import harness.backends.docker.client as client

    monkeypatch.setattr(client, "docker_available", lambda timeout=3.0: False)
    assert make_backend("auto").name == "local"
    for name in ("auto", "local"):  # a runtime never falls back to a process on the host
        with pytest.raises(RunError, match=r"runtime 'runsc' needs the docker backend"):
            make_backend(name, runtime="runsc")
    monkeypatch.setattr(client, "docker_available", lambda timeout=3.0: True)
    backend = make_backend("auto", image="harness-cpu:latest", runtime="runsc")
    assert (backend.name, backend.image, backend.runtime) == ("docker", "harness-cpu:latest", "runsc")


def test_third_party_backend_through_an_entry_point(fake_dist):
    names = backend_names()
    assert names[:2] == ["local", "docker"] and "fake" in names
    assert "Bad_Name" not in names and names.count("local") == 1  # bad names ignored; built-ins kept
    assert isinstance(create_backend("local"), LocalBackend)
    fake = create_backend("fake", image="x:1")
    assert type(fake).__name__ == "FakeBackend" and fake.options == {"image": "x:1"}
    via_run = make_backend("fake", image="harness-cpu:latest", runtime="runsc")
    assert via_run.options == {"image": "harness-cpu:latest", "runtime": "runsc"}


def test_cli_unknown_backend_exits_2_naming_every_registered_one(fake_dist, tiny_cache, isolated_dirs, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tiny_cache.data_dir.parent))
    result = CliRunner().invoke(app, ["run", str(TOY), "--backend", "nosuch", "--budget", "2", "--no-calibrate"])
    assert result.exit_code == 2, result.output
    for name in ("local", "docker", "fake"):
        assert name in result.output
    assert "unknown backend 'nosuch'" in result.output
    assert not (isolated_dirs / "runs").exists() or not any((isolated_dirs / "runs").iterdir())


def test_cli_runs_on_the_third_party_backend(fake_dist, tiny_cache, isolated_dirs, monkeypatch):
    """The record names the third party's backend and still matches the result schema."""
    from harness.store import validate_record

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tiny_cache.data_dir.parent))
    result = CliRunner().invoke(app, ["run", str(TOY), "--backend", "fake", "--budget", "2", "--no-calibrate",
                                      "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["backend"] == "fake" and record["isolated"] is False and record["trust"] == "unisolated"
    validate_record(json.loads((Path(record["log_path"]).parent / "result.json").read_text()))


def test_nothing_outside_backends_imports_docker():
    """The Docker SDK is imported only under harness/backends/ (the architecture's one rule for it)."""
    root = REPO / "harness"
    offenders = []
    for path in root.rglob("*.py"):
        if (root / "backends") in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            if any(n == "docker" or n.startswith("docker.") for n in names):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


def test_the_harness_works_without_the_docker_sdk(tmp_path):
    """Without the SDK: images' definitions, the hardware profile, doctor and `auto` still work (no Docker)."""
    code = textwrap.dedent('''
        import sys
        sys.modules["docker"] = None  # import docker -> ImportError
        from harness import images
        from harness.backends.docker import docker_available
        from harness.doctor import run_checks
        from harness.hw.profile import docker_facts
        from harness.pipeline import make_backend
        assert images.latest_tag("cpu") == "harness-cpu:latest"
        assert docker_available() is False
        assert "docker_error" in docker_facts()
        docker = next(c for c in run_checks(nvml_module=None, image_tags=()) if c.name == "docker")
        assert not docker.ok
        assert make_backend("auto").name == "local"
        try:
            make_backend("docker")
        except Exception as e:
            assert "docker backend is unavailable" in str(e), e
        else:
            raise AssertionError("docker without the SDK")
        print("OK")
    ''')
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.stdout.strip().endswith("OK"), proc.stdout + proc.stderr
