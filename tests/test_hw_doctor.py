"""harness doctor checks: fake Docker client and fake NVML, plus the honest CPU-only path here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.doctor import Check, all_ok, format_checks, run_checks
from harness.hw.nvml import nvml_status
from tests.fakes import load_module_from_path

FAKE = load_module_from_path(str(Path(__file__).parent / "fakes" / "pynvml.py"))


class ImageNotFound(Exception):  # the docker SDK's exception has this name
    pass


class _Images:
    def __init__(self, present):
        self.present = set(present)

    def get(self, tag):
        if tag not in self.present:
            raise ImageNotFound(f"No such image: {tag}")
        return type("Img", (), {"short_id": "sha256:abc123", "id": "sha256:abc123def"})()


class FakeDocker:
    def __init__(self, runtimes=("runc", "nvidia"), images=("harness-cpu:latest", "harness-cuda:latest"),
                 root="/nonexistent-docker-root"):
        self.runtimes = runtimes
        self.images = _Images(images)
        self.root = root

    def ping(self):
        return True

    def version(self):
        return {"Version": "27.1.0", "ApiVersion": "1.46"}

    def info(self):
        return {"Runtimes": {r: {} for r in self.runtimes}, "DockerRootDir": self.root}


def _by_name(checks):
    return {c.name: c for c in checks}


def _manifest(tmp_path, name="tiny"):
    p = tmp_path / name / "manifest.json"
    p.parent.mkdir(parents=True)
    p.write_text(json.dumps({"benchmark": name}), encoding="utf-8")
    return p


def test_gpu_machine_all_green(tmp_path):
    checks = run_checks(
        docker_client=FakeDocker(),
        nvml_module=FAKE.make_module([FAKE.h100_sxm(), FAKE.a100_with_mig()]),
        benchmarks=[("tiny", _manifest(tmp_path))],
        disk_paths=[tmp_path],
        min_free_gb=0.001,
        which=lambda exe: f"/usr/bin/{exe}",
    )
    c = _by_name(checks)
    assert all(ch.ok for ch in checks), format_checks(checks)
    assert all_ok(checks)
    assert "Docker 27.1.0" in c["docker"].detail
    assert "nvidia" in c["nvidia runtime"].detail
    assert c["container toolkit"].detail == "nvidia-container-cli at /usr/bin/nvidia-container-cli"
    assert c["nvml"].detail == "driver 550.54.15, CUDA 12.4"
    assert "class H100-SXM-80GB·700W" in c["gpu 0"].detail
    assert "class A100-SXM-80GB·MIG-1g.10gb" in c["gpu 1 MIG 1g.10gb"].detail
    assert c["image harness-cuda:latest"].detail.startswith("present")
    assert c["benchmark tiny"].ok
    assert [ch.name for ch in checks][:3] == ["docker", "nvidia runtime", "container toolkit"]


def test_gpu_machine_missing_toolkit_runtime_images_and_data(tmp_path):
    checks = run_checks(
        docker_client=FakeDocker(runtimes=("runc",), images=()),
        nvml_module=FAKE.make_module([FAKE.h100_sxm()]),
        benchmarks=lambda: [("tiny", tmp_path / "tiny" / "manifest.json")],
        disk_paths=[tmp_path],
        min_free_gb=1e9,
        which=lambda exe: None,
    )
    c = _by_name(checks)
    for name in ("nvidia runtime", "container toolkit", "image harness-cpu:latest", "image harness-cuda:latest",
                 f"disk {tmp_path}"):
        assert not c[name].ok and c[name].required and c[name].fix, name
    # Never prepared: a warning (it matters when that benchmark is run); a broken cache is a failure.
    assert not c["benchmark tiny"].ok and not c["benchmark tiny"].required
    assert "nvidia-ctk runtime configure" in c["nvidia runtime"].fix
    assert c["image harness-cuda:latest"].detail == "not built"
    assert c["benchmark tiny"].fix == "harness prepare --benchmark tiny"
    assert "not prepared" in c["benchmark tiny"].detail
    assert not all_ok(checks)
    text = format_checks(checks)
    assert "[FAIL] container toolkit" in text and "fix: install the NVIDIA Container Toolkit" in text


def test_cpu_machine_is_honest_and_usable(tmp_path):
    checks = run_checks(
        docker_client=FakeDocker(runtimes=("runc",), images=("harness-cpu:latest",)),
        nvml_module=FAKE.make_module([], init_error="library_not_found"),
        disk_paths=[tmp_path],
        min_free_gb=0.001,
        which=lambda exe: None,
    )
    c = _by_name(checks)
    assert c["nvml"].status == "warn" and c["nvml"].detail.startswith("NVML not available: ")
    assert c["gpus"].status == "warn" and c["gpus"].detail.startswith("no GPU: runs use the CPU class CPU-")
    assert c["nvidia runtime"].status == "warn" and "needed only for GPU runs" in c["nvidia runtime"].detail
    assert c["image harness-cuda:latest"].status == "warn"
    assert c["image harness-cpu:latest"].ok
    assert all_ok(checks), format_checks(checks)


def test_docker_unreachable_says_how_to_fix(tmp_path):
    def boom():
        raise ConnectionError("Error while fetching server API version")

    checks = run_checks(docker_factory=boom, nvml_module=FAKE.make_module([], init_error="library_not_found"),
                        disk_paths=[tmp_path], min_free_gb=0.001, which=lambda exe: None)
    c = _by_name(checks)
    assert not c["docker"].ok and c["docker"].required
    assert "systemctl start docker" in c["docker"].fix and "--backend local" in c["docker"].fix
    assert c["image harness-cpu:latest"].detail == "unknown: docker not reachable"
    assert not all_ok(checks)


def test_benchmark_verifier_and_broken_manifest(tmp_path):
    good = _manifest(tmp_path, "tiny")
    bad = tmp_path / "small" / "manifest.json"
    bad.parent.mkdir()
    bad.write_text("{broken", encoding="utf-8")
    checks = run_checks(probe_docker=False, nvml_module=FAKE.make_module([], init_error="library_not_found"),
                        benchmarks=[("tiny", good), ("small", bad)], disk_paths=[], which=lambda e: None)
    c = _by_name(checks)
    assert c["benchmark tiny"].ok and not c["benchmark small"].ok and "unreadable" in c["benchmark small"].detail

    def verify(name, path):
        if name == "tiny":
            raise RuntimeError("hash mismatch")
        return True, "verified"

    checks = run_checks(probe_docker=False, nvml_module=FAKE.make_module([], init_error="library_not_found"),
                        benchmarks=[("tiny", good), ("small", bad)], verify_benchmark=verify, disk_paths=[],
                        which=lambda e: None)
    c = _by_name(checks)
    assert not c["benchmark tiny"].ok and "hash mismatch" in c["benchmark tiny"].detail
    assert c["benchmark small"].ok and c["benchmark small"].detail == "verified"


def test_benchmark_listing_failure():
    def listing():
        raise FileNotFoundError("benchmarks.yaml")

    checks = run_checks(probe_docker=False, nvml_module=FAKE.make_module([], init_error="library_not_found"),
                        benchmarks=listing, disk_paths=[], which=lambda e: None)
    assert not _by_name(checks)["benchmarks"].ok


def test_check_dataclass():
    c = Check("x", False, "bad", "do y", required=False)
    assert c.status == "warn" and c.to_dict()["status"] == "warn"
    assert Check("x", False, "bad").status == "FAIL" and Check("x", True, "ok").status == "ok"


def test_real_run_checks_on_this_machine(tmp_path):
    """No fakes: must not crash; without a driver NVML is a warning, not a failure."""
    checks = run_checks(docker_timeout=3.0, disk_paths=[tmp_path], min_free_gb=0.001)
    c = _by_name(checks)
    assert {"docker", "nvidia runtime", "container toolkit", "nvml"} <= set(c)
    if not nvml_status().available:
        assert c["nvml"].status == "warn" and c["gpus"].detail.startswith("no GPU: runs use the CPU class")
    assert all(isinstance(ch.detail, str) and ch.detail for ch in checks)
    assert all(ch.fix for ch in checks if not ch.ok)


@pytest.mark.parametrize("tags", [("mine-cpu:1",), ("a:1", "b-cuda:2")])
def test_image_tags_are_parameters(tags, tmp_path):
    checks = run_checks(docker_client=FakeDocker(images=tags), nvml_module=FAKE.make_module([FAKE.h100_sxm()]),
                        image_tags=tags, disk_paths=[], which=lambda e: "/x")
    names = [c.name for c in checks if c.name.startswith("image ")]
    assert names == [f"image {t}" for t in tags]
    assert all(c.ok for c in checks if c.name.startswith("image "))
