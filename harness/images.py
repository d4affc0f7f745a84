"""The container images a run uses: names, look-up, and builds.

Three images, all with the same layout (user ``runner`` uid 1000, ``WORKDIR /work``, a venv at
``/opt/venv`` first on PATH, no network needed at run time):

    harness-base:bookworm            minimal Debian bookworm + python3 (3.11) + venv/pip, imported
                                     from a debootstrap rootfs (images/base/build-base.sh); no registry
    harness-cpu:<version>, :latest   base + CPU torch, numpy, tiktoken (images/cpu/Dockerfile)
    harness-cuda:<version>, :latest  a CUDA base (nvidia/cuda by default) + CUDA torch (Dockerfile.cuda)

Offline builds (the default for ``cpu``) need no image registry and no network inside any build
step: the Python wheels are downloaded on the host with the host's own pip (so its configuration,
find-links, indexes and constraints apply) into ``images/context/<kind>/wheels`` (git-ignored) and
installed in the image with ``pip install --no-index``; the build runs with network mode "none".

Library use (the CLI and the docker backend):

    client = connect()                       # raises ImageError naming the fix
    info = get_image(client, "cpu")          # ImageInfo or None
    info = ensure_image("cpu", client=client)  # build only if missing or stale
    info = build_image("cpu", offline=True, progress=print)

Command line (used by .ci/docker-up):

    python -m harness.images ensure cpu      # build base + cpu if missing/stale, else report
    python -m harness.images build cpu|cuda|base [--offline|--online] [--force]
    python -m harness.images show [cpu|cuda|base]

The last build of each kind is recorded in ``<repo>/.cache/images.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from harness import __version__
from harness.paths import repo_root

KINDS = ("cpu", "cuda")
BASE_KIND = "base"
BASE_REPO = "harness-base"
BASE_SUITE = "bookworm"
BASE_TAG = f"{BASE_REPO}:{BASE_SUITE}"
# Debian packages of the base image. The "dev" flavour adds what torch.compile / Triton need at
# run time (a C compiler and Python.h); it is the offline base for Dockerfile.cuda.
BASE_PACKAGES = ("python3", "python3-venv")
BASE_DEV_PACKAGES = BASE_PACKAGES + ("gcc", "libc6-dev", "python3-dev")
DEFAULT_CUDA_BASE = "nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04"
DEFAULT_DEBIAN_MIRROR = "http://deb.debian.org/debian"

LABEL_KIND = "harness.image.kind"
LABEL_VERSION = "harness.version"
LABEL_RECIPE = "harness.recipe"
LABEL_TORCH = "harness.torch"
LABEL_PYTHON = "harness.python"

BUILD_TIMEOUT_S = 3 * 3600  # HTTP read timeout for one build/import call; steps can be silent for minutes

Progress = Callable[[str], None]


class ImageError(RuntimeError):
    """A build or look-up failed; the message says what to do about it."""


@dataclass(frozen=True)
class ImageInfo:
    tag: str
    id: str
    kind: str
    labels: dict[str, str] = field(default_factory=dict)
    created: str = ""
    size: int | None = None  # bytes, as the daemon reports it

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- names and paths


def _check_kind(kind: str, allow_base: bool = False) -> str:
    kinds = KINDS + ((BASE_KIND,) if allow_base else ())
    if kind not in kinds:
        raise ValueError(f"unknown image kind {kind!r}; expected one of {', '.join(kinds)}")
    return kind


def image_repo(kind: str) -> str:
    if _check_kind(kind, allow_base=True) == BASE_KIND:
        return BASE_REPO
    return f"harness-{kind}"


def image_tag(kind: str, version: str = __version__) -> str:
    """The tag a run uses: ``harness-cpu:0.1.0``; the base is ``harness-base:bookworm``."""
    if _check_kind(kind, allow_base=True) == BASE_KIND:
        return BASE_TAG
    return f"{image_repo(kind)}:{version}"


def latest_tag(kind: str) -> str:
    _check_kind(kind)
    return f"{image_repo(kind)}:latest"


def images_dir(root: Path | None = None) -> Path:
    return (root or repo_root()) / "images"


def context_dir(kind: str, root: Path | None = None) -> Path:
    """The build context of a kind (git-ignored): Dockerfile, requirements and wheels/ are put here."""
    return images_dir(root) / "context" / kind


def record_path(root: Path | None = None) -> Path:
    return (root or repo_root()) / ".cache" / "images.json"


def dockerfile_path(kind: str, root: Path | None = None) -> Path:
    root = root or repo_root()
    if _check_kind(kind) == "cuda":
        return root / "Dockerfile.cuda"
    return images_dir(root) / kind / "Dockerfile"


def requirements_path(kind: str, root: Path | None = None) -> Path:
    return images_dir(root) / _check_kind(kind) / "requirements.txt"


def base_script(root: Path | None = None) -> Path:
    return images_dir(root) / "base" / "build-base.sh"


# --------------------------------------------------------------------------- recipes


def _sha256_files(paths: Iterable[Path], extra: Iterable[str] = ()) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode() + b"\0")
        h.update(p.read_bytes())
        h.update(b"\0")
    for s in extra:
        h.update(s.encode() + b"\0")
    return h.hexdigest()[:16]


def recipe_digest(kind: str, root: Path | None = None, base_packages: Iterable[str] = BASE_PACKAGES) -> str:
    """A short digest of the files that define an image; stored as the label ``harness.recipe``.

    An image whose label differs from the current digest is stale and ``ensure_image`` rebuilds it.
    """
    if _check_kind(kind, allow_base=True) == BASE_KIND:
        return _sha256_files([base_script(root)], [BASE_SUITE, ",".join(base_packages)])
    files = [dockerfile_path(kind, root), requirements_path(kind, root)]
    if kind == "cpu":
        files.append(base_script(root))
    return _sha256_files(files, [kind])


_WHEEL_RE = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)-")


def wheel_versions(wheels: Iterable[Path | str]) -> dict[str, str]:
    """``{"torch": "2.13.0+cpu", ...}`` from wheel file names (names normalised to lower case, '-')."""
    out: dict[str, str] = {}
    for w in wheels:
        m = _WHEEL_RE.match(Path(w).name)
        if m and Path(w).name.endswith(".whl"):
            out[m["name"].lower().replace("_", "-")] = m["version"]
    return out


def pinned_versions(requirements: Path) -> dict[str, str]:
    """``name==version`` pins of a requirements file."""
    out: dict[str, str] = {}
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.match(r"^([A-Za-z0-9_.\-]+)\s*==\s*([^\s;]+)", line)
        if m:
            out[m[1].lower().replace("_", "-")] = m[2]
    return out


# --------------------------------------------------------------------------- docker client


def connect(client: Any = None, timeout: int | None = None) -> Any:
    """The given client, or ``docker.from_env()``; ImageError naming the fix when no daemon answers."""
    if client is not None:
        return client
    try:
        import docker
    except ImportError as e:  # pragma: no cover - docker is a dependency of the package
        raise ImageError("the Python package 'docker' is missing: pip install 'docker>=7.1'") from e
    try:
        kwargs = {"timeout": timeout} if timeout else {}
        c = docker.from_env(**kwargs)
        c.ping()
        return c
    except Exception as e:  # DockerException, requests ConnectionError, PermissionError ...
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise ImageError(
            f"Docker daemon not reachable at {where} ({type(e).__name__}: {e}); "
            "start dockerd or run .ci/docker-up"
        ) from e


def _info_from_image(img: Any, tag: str, kind: str) -> ImageInfo:
    attrs = img.attrs
    labels = dict((attrs.get("Config") or {}).get("Labels") or {})
    return ImageInfo(tag=tag, id=img.id, kind=kind, labels=labels,
                     created=attrs.get("Created", ""), size=attrs.get("Size"))


def get_image(client: Any, kind: str, tag: str | None = None) -> ImageInfo | None:
    """The local image of a kind (by ``image_tag(kind)`` unless ``tag`` is given), or None.

    An image under that tag whose ``harness.image.kind`` label names another kind counts as absent.
    """
    import docker.errors

    _check_kind(kind, allow_base=True)
    tag = tag or image_tag(kind)
    try:
        img = client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError as e:
        raise ImageError(f"could not inspect image {tag}: {e}") from e
    info = _info_from_image(img, tag, kind)
    if info.labels.get(LABEL_KIND) != kind:
        return None
    return info


def stale_reason(info: ImageInfo, root: Path | None = None) -> str | None:
    """Why an image no longer matches this checkout (version or recipe changed), or None if it does."""
    want = {LABEL_KIND: info.kind, LABEL_RECIPE: recipe_digest(info.kind, root)}
    if info.kind != BASE_KIND:
        want[LABEL_VERSION] = __version__
    for key, value in want.items():
        have = info.labels.get(key)
        if have != value:
            return f"label {key}={have!r}, this checkout wants {value!r}"
    return None


# --------------------------------------------------------------------------- records


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def record_build(info: ImageInfo, seconds: float | None = None, root: Path | None = None) -> Path:
    """Write (merge) ``.cache/images.json``: the last build of each kind."""
    path = record_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    entry = info.to_json()
    entry["built_at"] = _now()
    if seconds is not None:
        entry["build_seconds"] = round(seconds, 1)
    data[info.kind] = entry
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def read_records(root: Path | None = None) -> dict[str, Any]:
    try:
        return json.loads(record_path(root).read_text())
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def _build_lock(root: Path | None, progress: Progress):
    """Serialise builds of one checkout (.cache/images.lock): a second `ensure` waits, then reuses."""
    path = (root or repo_root()) / ".cache" / "images.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"another image build holds {path}; waiting for it")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- wheels


def _pip_python() -> str:
    """The host Python whose pip downloads wheels (HARNESS_PIP_PYTHON overrides)."""
    override = os.environ.get("HARNESS_PIP_PYTHON")
    if override:
        return override
    try:
        import pip  # noqa: F401

        return sys.executable
    except ImportError:
        found = shutil.which("python3")
        if not found:
            raise ImageError("no Python with pip found to download wheels; set HARNESS_PIP_PYTHON")
        return found


def manylinux_platforms(glibc_minor: int = 36, arch: str = "x86_64") -> list[str]:
    """Every manylinux tag a glibc 2.<glibc_minor> system accepts (pip does not expand --platform).

    2.36 is Debian bookworm's glibc; Ubuntu 24.04 has 2.39, so bookworm's set fits both bases.
    """
    tags = [f"manylinux_2_{m}_{arch}" for m in range(glibc_minor, 4, -1)]
    return tags + [f"manylinux2014_{arch}", f"manylinux2010_{arch}", f"manylinux1_{arch}"]


def download_wheels(
    requirements: Path,
    dest: Path,
    *,
    python_version: str,
    platforms: Iterable[str] | None = None,
    extra_args: Iterable[str] = (),
    progress: Progress = print,
) -> list[Path]:
    """Download the wheels of ``requirements`` (and their dependencies) for the image's Python.

    Runs ``<host python> -m pip download`` so the host's pip configuration (find-links, indexes,
    constraints) applies. Wheels in ``dest`` that the requirements no longer need are removed.
    Extra pip arguments also come from HARNESS_PIP_ARGS (split on spaces), e.g.
    ``--extra-index-url https://download.pytorch.org/whl/cpu``.
    """
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [_pip_python(), "-m", "pip", "download", "--only-binary=:all:", "--dest", str(dest),
           "--python-version", python_version, "--implementation", "cp",
           "-r", str(requirements)]
    for p in platforms or manylinux_platforms():
        cmd += ["--platform", p]
    cmd += list(extra_args)
    cmd += os.environ.get("HARNESS_PIP_ARGS", "").split()
    progress(f"downloading wheels: {' '.join(c for c in cmd if not c.startswith(('manylinux', '--platform')))}"
             f" --platform manylinux...")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise ImageError(
            f"pip download failed for {requirements} (exit {proc.returncode}):\n{tail}\n"
            "check the pins, the host's pip configuration (pip config list) and that the index "
            "holding the torch wheel is reachable (HARNESS_PIP_ARGS adds pip options)"
        )
    wanted: set[str] = set()
    for line in proc.stdout.splitlines():
        line = line.strip()
        m = re.match(r"^(?:Saved|File was already downloaded)\s+(.+\.whl)$", line)
        if m:
            wanted.add(Path(m[1]).name)
    if not wanted:  # unknown pip output format: keep everything
        wanted = {p.name for p in dest.glob("*.whl")}
    for p in dest.iterdir():
        if p.is_file() and p.name not in wanted:
            p.unlink()
    wheels = sorted(dest / n for n in wanted)
    total = sum(p.stat().st_size for p in wheels)
    progress(f"wheels: {len(wheels)} files, {total / 2**20:.0f} MiB in {dest}")
    return wheels


# --------------------------------------------------------------------------- builds


def _stream_build(client: Any, progress: Progress, **kwargs: Any) -> tuple[str, list[str]]:
    """Run ``client.api.build``; return (final image id, ids of all stages); ImageError on failure."""
    ids: list[str] = []
    tail: list[str] = []
    for chunk in client.api.build(decode=True, rm=True, forcerm=True, timeout=BUILD_TIMEOUT_S, **kwargs):
        if "stream" in chunk:
            for line in chunk["stream"].splitlines():
                if line.strip():
                    tail = (tail + [line])[-30:]
                    progress(line)
        elif "error" in chunk or "errorDetail" in chunk:
            msg = chunk.get("error") or chunk.get("errorDetail", {}).get("message", "")
            raise ImageError("docker build failed: " + msg + "\n" + "\n".join(tail[-15:]))
        elif "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
            ids.append(chunk["aux"]["ID"])
        elif "status" in chunk:  # pulling a base image (online builds)
            progress(str(chunk["status"]) + (" " + chunk["progress"] if chunk.get("progress") else ""))
    if not ids:
        raise ImageError("docker build finished without an image id:\n" + "\n".join(tail[-15:]))
    return ids[-1], ids


def _remove_stage_images(client: Any, keep: str, ids: list[str], progress: Progress) -> None:
    """Remove the untagged images of earlier build stages (they hold the wheels; ~1 GB).

    Stages the final image builds on (its ancestors) stay: they are its layers.
    """
    try:
        ancestors = {h.get("Id") for h in client.images.get(keep).history()}
    except Exception:
        ancestors = set()
    for i in ids:
        if i == keep or i in ancestors:
            continue
        try:
            client.images.remove(i, noprune=False)
        except Exception as e:  # in use as a parent or already gone: harmless
            progress(f"note: could not remove build stage image {i[:19]}: {e}")


def _label_changes(labels: dict[str, str]) -> str:
    return "LABEL " + " ".join(f"{k}={json.dumps(v)}" for k, v in labels.items())


def build_base(
    client: Any = None,
    *,
    dev: bool = False,
    mirror: str | None = None,
    progress: Progress = print,
    root: Path | None = None,
) -> ImageInfo:
    """Build ``harness-base:bookworm`` (``:bookworm-dev`` with ``dev=True``) from Debian packages.

    Runs images/base/build-base.sh (debootstrap, needs root) into a temporary rootfs tar in the
    context directory, then imports it with labels. Mirror: ``mirror`` or HARNESS_DEBIAN_MIRROR.
    """
    client = connect(client, timeout=BUILD_TIMEOUT_S)
    root = root or repo_root()
    with _build_lock(root, progress):
        return _build_base(client, dev=dev, mirror=mirror, progress=progress, root=root)


def _build_base(client: Any, *, dev: bool, mirror: str | None, progress: Progress, root: Path) -> ImageInfo:
    if shutil.which("debootstrap") is None:
        raise ImageError("debootstrap not installed: apt-get install -y debootstrap (or run .ci/docker-up)")
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise ImageError("building the base image needs root (debootstrap and chroot): run as root")
    mirror = mirror or os.environ.get("HARNESS_DEBIAN_MIRROR") or DEFAULT_DEBIAN_MIRROR
    packages = BASE_DEV_PACKAGES if dev else BASE_PACKAGES
    tag = BASE_TAG + ("-dev" if dev else "")
    ctx = context_dir(BASE_KIND, root)
    ctx.mkdir(parents=True, exist_ok=True)
    tar = ctx / ("rootfs-dev.tar" if dev else "rootfs.tar")
    t0 = time.monotonic()
    progress(f"building {tag}: debootstrap {BASE_SUITE} ({', '.join(packages)}) from {mirror}")
    proc = subprocess.Popen(
        ["bash", str(base_script(root)), str(tar), BASE_SUITE, mirror, ",".join(packages)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip())
        progress(line.rstrip())
    if proc.wait() != 0:
        raise ImageError(f"{base_script(root).name} failed (exit {proc.returncode}):\n" + "\n".join(lines[-20:]))
    meta = dict(
        line.split("=", 1) for line in Path(str(tar) + ".env").read_text().splitlines() if "=" in line
    )
    labels = {
        "org.opencontainers.image.title": tag.split(":")[0],
        "org.opencontainers.image.description":
            f"Debian {BASE_SUITE} minbase + {', '.join(packages)} (debootstrap, no registry)",
        "org.opencontainers.image.version": meta.get("DEBIAN_VERSION", ""),
        "org.opencontainers.image.created": _now(),
        LABEL_KIND: BASE_KIND,
        LABEL_PYTHON: meta.get("PYTHON_VERSION", ""),
        "harness.debian": meta.get("DEBIAN_VERSION", ""),
        "harness.debian.mirror": mirror,
        "harness.base.packages": ",".join(packages),
        LABEL_VERSION: __version__,
        LABEL_RECIPE: recipe_digest(BASE_KIND, root, packages),
    }
    changes = [
        _label_changes(labels),
        "ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        'CMD ["python3"]',
    ]
    repo, _, tagname = tag.partition(":")
    progress(f"importing {tar.name} ({tar.stat().st_size / 2**20:.0f} MiB) as {tag}")
    try:
        out = client.api.import_image_from_file(str(tar), repository=repo, tag=tagname, changes=changes)
    except Exception as e:
        raise ImageError(f"docker import of {tar} failed: {e}") from e
    finally:
        for p in (tar, Path(str(tar) + ".env")):
            p.unlink(missing_ok=True)
    if "error" in str(out).lower() and "sha256:" not in str(out):
        raise ImageError(f"docker import of {tar} failed: {out}")
    img = client.images.get(tag)
    info = _info_from_image(img, tag, BASE_KIND)
    seconds = time.monotonic() - t0
    record_build(info, seconds, root)
    progress(f"built {tag} {img.short_id} in {seconds:.0f}s")
    return info


def _ensure_base(client: Any, progress: Progress, root: Path, dev: bool = False) -> ImageInfo:
    tag = BASE_TAG + ("-dev" if dev else "")
    info = get_image(client, BASE_KIND, tag=tag)
    packages = BASE_DEV_PACKAGES if dev else BASE_PACKAGES
    if info is not None and info.labels.get(LABEL_RECIPE) == recipe_digest(BASE_KIND, root, packages):
        progress(f"base image {tag} present ({info.id[:19]})")
        return info
    if info is not None:
        progress(f"base image {tag} is stale (recipe changed): rebuilding")
    return _build_base(client, dev=dev, mirror=None, progress=progress, root=root)


def _prepare_context(kind: str, root: Path) -> Path:
    ctx = context_dir(kind, root)
    (ctx / "wheels").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(dockerfile_path(kind, root), ctx / "Dockerfile")
    shutil.copyfile(requirements_path(kind, root), ctx / "requirements.txt")
    return ctx


def build_image(
    kind: str,
    offline: bool | None = None,
    client: Any = None,
    progress: Progress = print,
    *,
    base_image: str | None = None,
    force: bool = False,
    root: Path | None = None,
) -> ImageInfo:
    """Build the run image of ``kind`` and tag it ``image_tag(kind)`` and ``latest_tag(kind)``.

    ``offline`` (default: True for cpu, False for cuda): wheels are downloaded on the host into the
    build context and installed with ``--no-index``; the build runs with network mode "none" and
    never pulls; the base image must exist locally (for cpu, ``harness-base:bookworm`` is built
    from Debian packages when missing). Online (cuda): the build pulls ``base_image`` and pip
    installs from the indexes named in Dockerfile.cuda.
    ``force`` rebuilds without the layer cache. Returns the new image; records it in .cache/images.json.
    """
    _check_kind(kind)
    root = root or repo_root()
    if offline is None:
        offline = kind == "cpu"
    if kind == "cpu" and not offline:
        raise ImageError("the cpu image is built offline only (its base is harness-base:bookworm); drop --online")
    client = connect(client, timeout=BUILD_TIMEOUT_S)
    with _build_lock(root, progress):
        return _build_image(kind, offline, client, progress, base_image=base_image, force=force, root=root)


def _build_image(kind: str, offline: bool, client: Any, progress: Progress, *,
                 base_image: str | None, force: bool, root: Path) -> ImageInfo:
    t0 = time.monotonic()
    ctx = _prepare_context(kind, root)
    buildargs: dict[str, str] = {}

    if kind == "cpu":
        base = _ensure_base(client, progress, root) if base_image is None else None
        base_image = base_image or BASE_TAG
        base = base or get_image(client, BASE_KIND, tag=base_image)
        python_version = (base.labels.get(LABEL_PYTHON) if base else None) or "3.11"
    else:
        base_image = base_image or os.environ.get("HARNESS_CUDA_BASE") or DEFAULT_CUDA_BASE
        base = None
        if base_image.startswith(BASE_REPO + ":"):
            base = _ensure_base(client, progress, root, dev=base_image.endswith("-dev"))
        else:
            try:
                base = _info_from_image(client.images.get(base_image), base_image, BASE_KIND)
            except Exception:
                base = None
        if offline and base is None:
            raise ImageError(
                f"offline cuda build: base image {base_image} is not present locally and no registry "
                f"is used offline; `docker load` it, or build from the Debian base with "
                f"--base {BASE_TAG}-dev"
            )
        python_version = (base.labels.get(LABEL_PYTHON) if base else None) or (
            "3.12" if "ubuntu24.04" in base_image else "3.11"
        )

    py_mm = ".".join(python_version.split(".")[:2])
    wheels_dir = ctx / "wheels"
    if offline:
        wheels = download_wheels(ctx / "requirements.txt", wheels_dir, python_version=py_mm, progress=progress)
        versions = wheel_versions(wheels)
    else:
        for p in wheels_dir.glob("*.whl"):
            p.unlink()  # online builds send no wheels
        versions = pinned_versions(ctx / "requirements.txt")

    buildargs.update(
        BASE_IMAGE=base_image,
        HARNESS_VERSION=__version__,
        HARNESS_TORCH=versions.get("torch", "unknown"),
        HARNESS_NUMPY=versions.get("numpy", "unknown"),
        HARNESS_TIKTOKEN=versions.get("tiktoken", "unknown"),
        HARNESS_PYTHON=python_version,
        HARNESS_RECIPE=recipe_digest(kind, root),
        CREATED=_now(),
    )
    if kind == "cuda":
        buildargs["OFFLINE"] = "1" if offline else "0"
        buildargs["HARNESS_BUILD_NETWORK"] = "none" if offline else "default"
    tag = image_tag(kind)
    previous = get_image(client, kind, tag=tag)
    progress(f"building {tag} ({'offline, network none' if offline else 'online'}) from {base_image}")
    build_kwargs: dict[str, Any] = dict(path=str(ctx), dockerfile="Dockerfile", tag=tag, buildargs=buildargs,
                                        nocache=force, pull=False)
    if offline:
        build_kwargs["network_mode"] = "none"
    try:
        image_id, stage_ids = _stream_build(client, progress, **build_kwargs)
    except ImageError:
        raise
    except Exception as e:  # APIError, ReadTimeout, ...
        raise ImageError(f"docker build of {tag} failed: {type(e).__name__}: {e}") from e
    img = client.images.get(image_id)
    img.tag(image_repo(kind), "latest")
    _remove_stage_images(client, image_id, stage_ids, progress)
    if previous is not None and previous.id != image_id:
        try:  # the image this build replaced, now untagged; kept while a container still uses it
            client.images.remove(previous.id)
        except Exception:
            pass
    img.reload()
    info = _info_from_image(img, tag, kind)
    seconds = time.monotonic() - t0
    record_build(info, seconds, root)
    progress(f"built {tag} (+ {latest_tag(kind)}) {img.short_id}, "
             f"{(info.size or 0) / 2**20:.0f} MiB, in {seconds:.0f}s")
    return info


def ensure_image(
    kind: str,
    client: Any = None,
    progress: Progress = print,
    *,
    offline: bool | None = None,
    root: Path | None = None,
) -> ImageInfo:
    """The image of ``kind``: the local one when it matches this checkout's labels, else a new build."""
    client = connect(client, timeout=BUILD_TIMEOUT_S)
    root = root or repo_root()
    _check_kind(kind)
    if offline is None:
        offline = kind == "cpu"
    with _build_lock(root, progress):
        return _ensure_image(kind, client, progress, offline=offline, root=root)


def _ensure_image(kind: str, client: Any, progress: Progress, *, offline: bool, root: Path) -> ImageInfo:
    info = get_image(client, kind, tag=image_tag(kind))
    if info is not None:
        reason = stale_reason(info, root)
        if reason is None:
            try:  # keep :latest on the current version
                if client.images.get(latest_tag(kind)).id != info.id:
                    client.images.get(info.id).tag(image_repo(kind), "latest")
            except Exception:
                client.images.get(info.id).tag(image_repo(kind), "latest")
            progress(f"{info.tag} present ({info.id[:19]}), labels match: nothing to build")
            return info
        progress(f"{info.tag} is stale ({reason}): rebuilding")
    if kind == "cpu" and not offline:
        raise ImageError("the cpu image is built offline only (its base is harness-base:bookworm)")
    return _build_image(kind, offline, client, progress, base_image=None, force=False, root=root)


# --------------------------------------------------------------------------- command line


def _show(client: Any, kinds: list[str]) -> int:
    rc = 0
    for kind in kinds:
        info = get_image(client, kind)
        if info is None:
            print(f"{image_tag(kind)}: absent")
            rc = 1
            continue
        stale = stale_reason(info)
        print(json.dumps({**info.to_json(), "stale": stale}, indent=2, sort_keys=True))
    return rc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.images", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build an image (always)")
    b.add_argument("kind", choices=KINDS + (BASE_KIND,))
    g = b.add_mutually_exclusive_group()
    g.add_argument("--offline", dest="offline", action="store_true", default=None,
                   help="wheels from the host into the context, --no-index, network none (default for cpu)")
    g.add_argument("--online", dest="offline", action="store_false",
                   help="pull the base and pip install from indexes in the build (default for cuda)")
    b.add_argument("--base", default=None, help="base image (cuda: default " + DEFAULT_CUDA_BASE + ")")
    b.add_argument("--dev", action="store_true", help="base: the flavour with gcc and python3-dev")
    b.add_argument("--force", action="store_true", help="ignore the layer cache")
    e = sub.add_parser("ensure", help="build only when missing or when its labels do not match this checkout")
    e.add_argument("kind", choices=KINDS)
    s = sub.add_parser("show", help="print the local images as JSON")
    s.add_argument("kind", nargs="?", choices=KINDS + (BASE_KIND,))
    args = parser.parse_args(argv)

    def progress(line: str) -> None:
        print(line, flush=True)

    try:
        if args.cmd == "build":
            if args.kind == BASE_KIND:
                build_base(dev=args.dev, progress=progress)
            else:
                build_image(args.kind, offline=args.offline, progress=progress, base_image=args.base,
                            force=args.force)
        elif args.cmd == "ensure":
            ensure_image(args.kind, progress=progress)
        else:
            return _show(connect(), [args.kind] if args.kind else [BASE_KIND, *KINDS])
    except ImageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
