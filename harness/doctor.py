"""``harness doctor``: is this machine ready to run benchmarks? Each failed check says how to fix it.

``run_checks()`` never raises; on a CPU-only machine NVML and GPUs come back as failed but
not ``required`` ("no GPU: runs use the CPU class ..."), so the machine is still usable.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterable

from harness.hw.gpu_class import decide_class
from harness.hw.nvml import NvmlUnavailable, open_nvml
from harness.hw.profile import host_facts, list_gpu_profiles, runnable_gpus

DEFAULT_IMAGES = ("harness-cpu:latest", "harness-cuda:latest")

BenchmarkList = Iterable[tuple[str, "str | Path"]]


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None  # what to do when not ok
    required: bool = True  # a failed optional check is a warning (e.g. no GPU on a CPU machine)

    @property
    def status(self) -> str:
        return "ok" if self.ok else ("FAIL" if self.required else "warn")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status
        return d


def all_ok(checks: list[Check]) -> bool:
    """True when every required check passed (the exit status of ``harness doctor``)."""
    return all(c.ok or not c.required for c in checks)


def format_checks(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        lines.append(f"[{c.status:>4}] {c.name}: {c.detail}")
        if not c.ok and c.fix:
            lines.append(f"       fix: {c.fix}")
    return "\n".join(lines)


def _docker_client(timeout: float) -> Any:
    # Imported here: the doctor runs (and says what is missing) without the Docker SDK.
    from harness.backends.docker.client import from_env

    return from_env(timeout=timeout)


def run_checks(
    *,
    docker_client: Any = None,
    docker_factory: Callable[[], Any] | None = None,
    probe_docker: bool = True,
    nvml_module: ModuleType | None = None,
    image_tags: Iterable[str] = DEFAULT_IMAGES,
    cuda_image_tags: Iterable[str] | None = None,
    benchmarks: BenchmarkList | Callable[[], BenchmarkList] | None = None,
    verify_benchmark: Callable[[str, Path], tuple[bool, str]] | None = None,
    disk_paths: Iterable[str | Path] = (".",),
    min_free_gb: float = 10.0,
    image_fix: str = "build the images: make images",
    prepare_fix: str = "harness prepare --benchmark {name}",
    which: Callable[[str], str | None] = shutil.which,
    docker_timeout: float = 5.0,
) -> list[Check]:
    """All checks, in order: docker, nvidia runtime, container toolkit, NVML, GPUs, images,
    benchmarks, disk.

    ``image_tags``: images that must exist; those in ``cuda_image_tags`` (default: tags with
    "cuda" in them) are only required when a GPU is present. ``benchmarks``: (name, manifest
    path) pairs, or a callable returning them; a benchmark is prepared when its manifest exists
    and parses (``verify_benchmark(name, path) -> (ok, detail)`` replaces that test).
    ``prepare_fix`` is formatted with ``name``.
    """
    checks: list[Check] = []

    # --- NVML and GPUs first: what is required below depends on having a GPU -------------
    gpu_checks, have_gpu = _gpu_checks(nvml_module)

    # --- docker ----------------------------------------------------------------------------
    client = docker_client
    docker_ok = False
    info: dict[str, Any] = {}
    if not probe_docker and client is None:
        checks.append(Check("docker", False, "not probed", "run without --no-docker", required=False))
    else:
        try:
            if client is None:
                client = docker_factory() if docker_factory else _docker_client(docker_timeout)
            client.ping()
            v = client.version()
            info = client.info() or {}
            docker_ok = True
            version = f"Docker {v.get('Version', '?')} (API {v.get('ApiVersion', '?')})"
            checks.append(Check("docker", True, f"daemon reachable, {version}"))
        except Exception as exc:  # noqa: BLE001
            checks.append(Check(
                "docker", False, f"daemon not reachable: {type(exc).__name__}: {exc}",
                "install Docker and start the daemon (sudo systemctl start docker); make sure this user may use "
                "/var/run/docker.sock (add it to the 'docker' group) or set DOCKER_HOST; "
                "runs can still use --backend local (unisolated)",
            ))

    # --- NVIDIA runtime / container toolkit -------------------------------------------------
    runtimes = sorted((info.get("Runtimes") or {}).keys()) if docker_ok else []
    toolkit_fix = (
        "install the NVIDIA Container Toolkit (nvidia-container-toolkit), then "
        "sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker"
    )
    if docker_ok:
        has_rt = "nvidia" in runtimes
        checks.append(Check(
            "nvidia runtime", has_rt,
            f"docker runtimes: {', '.join(runtimes) or 'none'}"
            + ("" if has_rt else " (no 'nvidia')" + ("" if have_gpu else "; needed only for GPU runs")),
            toolkit_fix, required=have_gpu,
        ))
    else:
        why = "docker not probed" if not probe_docker and docker_client is None else "docker not reachable"
        checks.append(Check("nvidia runtime", False, f"unknown: {why}", toolkit_fix, required=False))
    cli = which("nvidia-container-cli")
    checks.append(Check(
        "container toolkit", cli is not None,
        f"nvidia-container-cli at {cli}" if cli
        else "nvidia-container-cli not found on PATH" + ("" if have_gpu else "; needed only for GPU runs"),
        toolkit_fix, required=have_gpu,
    ))

    checks.extend(gpu_checks)

    # --- images ----------------------------------------------------------------------------
    tags = list(image_tags)
    cuda_tags = set(cuda_image_tags) if cuda_image_tags is not None else {t for t in tags if "cuda" in t}
    for tag in tags:
        need = have_gpu or tag not in cuda_tags
        name = f"image {tag}"
        if not docker_ok:
            why = "docker not probed" if not probe_docker and docker_client is None else "docker not reachable"
            checks.append(Check(name, False, f"unknown: {why}", image_fix, required=False))
            continue
        try:
            img = client.images.get(tag)
            short = str(getattr(img, "short_id", "") or getattr(img, "id", ""))
            checks.append(Check(name, True, f"present ({short})"))
        except Exception as exc:  # noqa: BLE001 - docker.errors.ImageNotFound and friends
            missing = type(exc).__name__ == "ImageNotFound"
            detail = "not built" if missing else f"cannot inspect: {type(exc).__name__}: {exc}"
            if not need:
                detail += " (needed only for GPU runs)"
            checks.append(Check(name, False, detail, image_fix, required=need))

    # --- benchmarks ------------------------------------------------------------------------
    items: list[tuple[str, Path]] = []
    if benchmarks is not None:
        try:
            raw = benchmarks() if callable(benchmarks) else benchmarks
            items = [(str(n), Path(p)) for n, p in raw]
        except Exception as exc:  # noqa: BLE001
            checks.append(Check("benchmarks", False, f"cannot list benchmarks: {type(exc).__name__}: {exc}",
                                "fix benchmarks.yaml (harness benchmarks names the field)"))
    for name, manifest in items:
        if verify_benchmark is not None:
            try:
                ok, detail = verify_benchmark(name, manifest)
            except Exception as exc:  # noqa: BLE001
                ok, detail = False, f"verification failed: {type(exc).__name__}: {exc}"
        else:
            ok, detail = _manifest_ok(manifest)
        # A benchmark never prepared only matters when it is run (a warning); a broken cache is a failure.
        checks.append(Check(f"benchmark {name}", ok, detail, prepare_fix.format(name=name),
                            required=manifest.exists()))

    # --- disk ------------------------------------------------------------------------------
    paths = [Path(p) for p in disk_paths]
    root_dir = info.get("DockerRootDir") if docker_ok else None
    if root_dir and Path(root_dir).exists():
        paths.append(Path(root_dir))
    seen: set[int] = set()
    for p in paths:
        probe = p
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            st = probe.stat()
            if st.st_dev in seen:
                continue
            seen.add(st.st_dev)
            free = shutil.disk_usage(probe).free / 1e9
        except OSError as exc:
            checks.append(Check(f"disk {p}", False, f"cannot stat: {exc}", "check the path", required=False))
            continue
        ok = free >= min_free_gb
        checks.append(Check(
            f"disk {p}", ok, f"{free:.1f} GB free" + ("" if ok else f" (< {min_free_gb:g} GB)"),
            f"free space on the filesystem of {p} (old runs: make clean; images: docker system prune)",
        ))
    return checks


def _gpu_checks(nvml_module: ModuleType | None) -> tuple[list[Check], bool]:
    checks: list[Check] = []
    try:
        session = open_nvml(nvml_module)
    except NvmlUnavailable as exc:
        cls = decide_class(host_facts(probe_docker=False))
        checks.append(Check(
            "nvml", False, str(exc),
            "install the NVIDIA driver (and nvidia-ml-py) to use a GPU; CPU runs need neither", required=False,
        ))
        checks.append(Check(
            "gpus", False, f"no GPU: runs use the CPU class {cls.label}",
            "run on a machine with an NVIDIA GPU for GPU results", required=False,
        ))
        return checks, False
    with session:
        checks.append(Check("nvml", True, f"driver {session.driver_version()}, CUDA {session.cuda_driver_version()}"))
        try:
            gpus = runnable_gpus(list_gpu_profiles(session))
        except Exception as exc:  # noqa: BLE001
            checks.append(Check("gpus", False, f"cannot list GPUs: {type(exc).__name__}: {exc}",
                                "check nvidia-smi; the driver may need a reset or a reboot"))
            return checks, False
    if not gpus:
        cls = decide_class(host_facts(probe_docker=False))
        checks.append(Check("gpus", False, f"NVML sees no GPU: runs use the CPU class {cls.label}",
                            "check nvidia-smi and the driver", required=False))
        return checks, False
    for g in gpus:
        cls = decide_class(g)
        detail = f"{g.uuid} {g.name}: class {cls.label}"
        if not cls.known:
            detail += " (unknown class: peak FLOP/s unknown)"
        name = f"gpu {g.index if g.index is not None else '?'}" + (f" MIG {g.mig_profile}" if g.is_mig_instance else "")
        checks.append(Check(name, True, detail))
    return checks, True


def _manifest_ok(manifest: Path) -> tuple[bool, str]:
    if not manifest.exists():
        return False, f"not prepared ({manifest} missing)"
    try:
        json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return False, f"manifest unreadable: {exc}"
    return True, f"prepared ({manifest})"
