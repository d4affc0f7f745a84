"""The run images: names and recipes (harness/images/, no Docker needed), and the built CPU image
(harness/backends/docker/images.py, marker docker).

The docker tests reuse harness-cpu:<version> when it is present and build it only when missing
(minutes). Without a reachable daemon they skip, except under CI=true, where they fail: CI starts
the daemon with .ci/docker-up.
"""

from __future__ import annotations

import json
import os
import re

import pytest

from harness import __version__
from harness import images
from harness.backends.docker import images as daemon
from harness.paths import repo_root

ROOT = repo_root()
IN_CI = os.environ.get("CI", "").lower() == "true"


# --------------------------------------------------------------------------- no Docker needed


def test_tags():
    assert images.image_tag("cpu") == f"harness-cpu:{__version__}"
    assert images.image_tag("cuda") == f"harness-cuda:{__version__}"
    assert images.latest_tag("cpu") == "harness-cpu:latest"
    assert images.image_tag("base") == "harness-base:bookworm"
    with pytest.raises(ValueError, match="unknown image kind"):
        images.image_tag("tpu")


def test_recipe_digest_is_stable_and_kind_specific():
    assert images.recipe_digest("cpu") == images.recipe_digest("cpu")
    assert images.recipe_digest("cpu") != images.recipe_digest("cuda")
    assert images.recipe_digest("base") != images.recipe_digest(
        "base", base_packages=images.BASE_DEV_PACKAGES)


def test_wheel_and_pin_versions(tmp_path):
    names = ["torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
             "typing_extensions-4.16.0-py3-none-any.whl", "notes.txt"]
    assert images.wheel_versions(names) == {"torch": "2.13.0+cpu", "typing-extensions": "4.16.0"}
    req = tmp_path / "r.txt"
    req.write_text("# c\ntorch==2.9.1+cu128  # pinned\nNumPy == 2.4.6\ntiktoken>=0.8\n")
    assert images.pinned_versions(req) == {"torch": "2.9.1+cu128", "numpy": "2.4.6"}


def test_manylinux_platforms_cover_older_glibc():
    tags = images.manylinux_platforms()
    assert tags[0] == "manylinux_2_36_x86_64" and "manylinux_2_27_x86_64" in tags
    assert "manylinux_2_5_x86_64" in tags and "manylinux2014_x86_64" in tags
    assert "manylinux_2_37_x86_64" not in tags


def test_requirements_pin_exactly_the_runtime_packages():
    for kind in images.KINDS:
        pins = images.pinned_versions(images.requirements_path(kind))
        assert set(pins) == {"torch", "numpy", "tiktoken"}, kind
    assert images.pinned_versions(images.requirements_path("cuda"))["torch"] == "2.9.1"
    assert images.pinned_versions(images.requirements_path("cpu"))["torch"].endswith("+cpu")


@pytest.mark.parametrize("path", ["Dockerfile.cuda", "images/cpu/Dockerfile"])
def test_dockerfiles_share_the_layout(path):
    text = (ROOT / path).read_text()
    assert "useradd --uid 1000" in text and " runner" in text
    assert re.search(r"^USER runner$", text, re.M)
    assert re.search(r"^WORKDIR /work$", text, re.M)
    assert "--no-index" in text
    for label in ("org.opencontainers.image.version", "org.opencontainers.image.created",
                  "harness.image.kind", "harness.torch", "harness.python", "harness.version"):
        assert label in text, label


def test_cuda_dockerfile_defaults():
    text = (ROOT / "Dockerfile.cuda").read_text()
    assert "ARG BASE_IMAGE=" + images.DEFAULT_CUDA_BASE in text
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128" in text
    assert 'harness.image.kind="cuda"' in text


def test_unreachable_daemon_names_the_fix(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(images.ImageError, match=r"start dockerd or run \.ci/docker-up"):
        daemon.connect()


def test_record_build_merges(tmp_path):
    a = images.ImageInfo(tag="harness-cpu:x", id="sha256:1", kind="cpu", labels={"a": "b"}, created="t")
    b = images.ImageInfo(tag="harness-base:bookworm", id="sha256:2", kind="base")
    images.record_build(a, 12.34, root=tmp_path)
    path = images.record_build(b, root=tmp_path)
    data = json.loads(path.read_text())
    assert path == tmp_path / ".cache" / "images.json"
    assert data["cpu"]["id"] == "sha256:1" and data["cpu"]["build_seconds"] == 12.3
    assert data["base"]["tag"] == "harness-base:bookworm"
    assert images.read_records(tmp_path) == data


def test_build_lock_serialises(tmp_path):
    import threading

    said: list[str] = []
    order: list[str] = []
    with images.build_lock(tmp_path, said.append):
        def second():
            with images.build_lock(tmp_path, said.append):
                order.append("second")

        t = threading.Thread(target=second)
        t.start()
        t.join(0.5)
        assert t.is_alive() and said and "waiting" in said[0]
        order.append("first")
    t.join(5)
    assert order == ["first", "second"]


# --------------------------------------------------------------------------- the built CPU image


@pytest.fixture(scope="module")
def client():
    try:
        return daemon.connect()
    except images.ImageError as e:
        if IN_CI:
            pytest.fail(f"CI=true but {e}")
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def cpu_image(client) -> images.ImageInfo:
    info = daemon.get_image(client, "cpu")
    if info is None:  # build once (under the build lock); later runs reuse it
        info = daemon.ensure_image("cpu", client=client, progress=lambda line: None)
    return info


def _run(client, image: images.ImageInfo, cmd: list[str], **kwargs) -> str:
    """Run cmd in a throw-away container with no network; return its output (fails on exit != 0)."""
    c = client.containers.create(image.id, cmd, network_mode="none", **kwargs)
    try:
        c.start()
        rc = c.wait(timeout=120)["StatusCode"]
        out = c.logs(stdout=True, stderr=True).decode()
        assert rc == 0, f"{cmd} exited {rc}:\n{out}"
        return out
    finally:
        c.remove(force=True)


@pytest.mark.docker
def test_cpu_image_labels(client, cpu_image):
    labels = cpu_image.labels
    assert labels["harness.image.kind"] == "cpu"
    assert labels["harness.version"] == __version__
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["harness.torch"].startswith("2.") and labels["harness.torch"].endswith("+cpu")
    assert labels["harness.python"].startswith("3.11")
    assert labels["harness.build.network"] == "none"
    stale = images.stale_reason(cpu_image)
    assert stale is None, f"{cpu_image.tag} is stale ({stale}): run harness image ensure cpu"
    assert client.images.get(images.latest_tag("cpu")).id == cpu_image.id


@pytest.mark.docker
def test_cpu_image_runs_as_runner_in_work(client, cpu_image):
    out = _run(client, cpu_image, ["sh", "-c", "id -u; id -g; id -un; pwd"])
    assert out.split() == ["1000", "1000", "runner", "/work"]


@pytest.mark.docker
def test_cpu_image_imports_runtime_packages_without_network(client, cpu_image):
    code = (
        "import json, socket, sys, numpy, tiktoken, torch\n"
        "x = torch.ones(4, 4) @ torch.ones(4, 4)\n"
        "enc = tiktoken.Encoding('t', pat_str=r'\\S+|\\s+', mergeable_ranks={bytes([i]): i for i in range(256)},"
        " special_tokens={})\n"
        "ifaces = [n for _, n in socket.if_nameindex()]\n"
        "print(json.dumps({'python': sys.version.split()[0], 'torch': torch.__version__,"
        " 'numpy': numpy.__version__, 'sum': float(x.sum()), 'tok': enc.encode('hi'), 'ifaces': ifaces}))\n"
    )
    out = _run(client, cpu_image, ["python3", "-c", code], read_only=True, tmpfs={"/tmp": "size=64m"})
    got = json.loads(out.strip().splitlines()[-1])
    assert got["torch"] == cpu_image.labels["harness.torch"]
    assert got["numpy"] == cpu_image.labels["harness.numpy"]
    assert got["python"] == cpu_image.labels["harness.python"]
    assert got["sum"] == 64.0 and got["tok"] == [104, 105]
    assert got["ifaces"] == ["lo"]  # network none: loopback only


@pytest.mark.docker
def test_cpu_image_pip_needs_no_network(client, cpu_image):
    """The installed set is consistent, and the build context installs with --no-index alone."""
    out = _run(client, cpu_image, ["python3", "-m", "pip", "check"])
    assert "No broken requirements" in out
    ctx = images.context_dir("cpu")
    if not any((ctx / "wheels").glob("torch-*.whl")):  # the image was reused, not built, by this checkout
        images.prepare_context("cpu", ROOT)
        images.download_wheels(ctx / "requirements.txt", ctx / "wheels",
                               python_version=cpu_image.labels["harness.python"], progress=lambda _m: None)
    out = _run(
        client, cpu_image,
        ["python3", "-m", "pip", "install", "--no-index", "--find-links", "/ctx/wheels", "--dry-run",
         "--ignore-installed", "--target", "/tmp/t", "-r", "/ctx/requirements.txt"],
        volumes={str(ctx): {"bind": "/ctx", "mode": "ro"}}, tmpfs={"/tmp": "size=64m"},
    )
    assert "Would install" in out and "torch-" in out


@pytest.mark.docker
def test_cpu_image_has_what_the_keeper_and_the_copy_of_out_need(client, cpu_image):
    """PID 1 of every run is the keeper (python3 -I -S, harness/backends/docker/keeper.py), and /out is copied
    out with `sh -c 'stat -f ...; tar ... | head -c N'` (harness/backends/docker/output.py): the image must
    carry them."""
    out = _run(client, cpu_image, ["sh", "-c", "for t in python3 tar head stat; do command -v $t; done; "
                                               "python3 -I -S -c 'import ctypes, os; print(hasattr(os, \"posix_spawnp\"))'"])
    lines = out.split()
    assert len(lines) == 5 and lines[-1] == "True", out


@pytest.mark.docker
def test_cli_image_show_and_ensure(client, cpu_image):
    """`harness image show|ensure` (the only image commands: the typer CLI's)."""
    from typer.testing import CliRunner

    from harness.cli import app

    shown = CliRunner().invoke(app, ["image", "show", "cpu", "--json"])
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.stdout)["cpu"]
    assert doc["id"] == cpu_image.id and doc["stale"] is None
    ensured = CliRunner().invoke(app, ["image", "ensure", "cpu"])
    assert ensured.exit_code == 0 and f"{cpu_image.tag} {cpu_image.id}" in ensured.stdout
    assert CliRunner().invoke(app, ["image", "show", "tpu"]).exit_code == 2
    assert CliRunner().invoke(app, ["image", "build", "tpu"]).exit_code == 2
