"""The run images in the Docker daemon: look them up, build them, make sure they match this checkout.

What the images are (kinds, tags, recipes, labels, records, wheels) is harness/images/; this module is
the part that talks to dockerd (through harness/backends/docker/client.py). Used by `harness image
build|ensure|show` and by `.ci/docker-up` (through `harness image ensure cpu`):

    client = connect()                          # raises ImageError naming the fix
    info = get_image(client, "cpu")             # ImageInfo or None
    info = ensure_image("cpu", client=client)   # build only if missing or stale
    info = build_image("cpu", offline=True, progress=print)
    build_base(dev=True)                        # harness-base:bookworm-dev (root + debootstrap)
    show_images(client, ["cpu"])                # the local images as JSON-able dicts (None: absent)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from harness import __version__
from harness.backends.docker.client import DockerUnavailable
from harness.backends.docker.client import connect as _connect
from harness.images.definitions import (
    BASE_DEV_PACKAGES,
    BASE_KIND,
    BASE_PACKAGES,
    BASE_REPO,
    BASE_SUITE,
    BASE_TAG,
    BUILD_TIMEOUT_S,
    DEFAULT_CUDA_BASE,
    DEFAULT_DEBIAN_MIRROR,
    KINDS,
    LABEL_KIND,
    LABEL_PYTHON,
    LABEL_RECIPE,
    LABEL_VERSION,
    ImageError,
    ImageInfo,
    Progress,
    base_script,
    check_kind,
    context_dir,
    image_repo,
    image_tag,
    latest_tag,
    now,
    pinned_versions,
    prepare_context,
    recipe_digest,
    stale_reason,
    wheel_versions,
)
from harness.images.records import build_lock, record_build
from harness.images.wheels import download_wheels
from harness.paths import repo_root


def connect(client: Any = None, timeout: int | None = None) -> Any:
    """The given client, or a new one whose daemon answered; ImageError naming the fix when none answers."""
    if client is not None:
        return client
    try:
        return _connect(timeout)
    except DockerUnavailable as e:
        raise ImageError(str(e)) from e


def info_from_image(img: Any, tag: str, kind: str) -> ImageInfo:
    attrs = img.attrs
    labels = dict((attrs.get("Config") or {}).get("Labels") or {})
    return ImageInfo(tag=tag, id=img.id, kind=kind, labels=labels,
                     created=attrs.get("Created", ""), size=attrs.get("Size"))


def get_image(client: Any, kind: str, tag: str | None = None) -> ImageInfo | None:
    """The local image of a kind (by ``image_tag(kind)`` unless ``tag`` is given), or None.

    An image under that tag whose ``harness.image.kind`` label names another kind counts as absent.
    """
    import docker.errors

    check_kind(kind, allow_base=True)
    tag = tag or image_tag(kind)
    try:
        img = client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError as e:
        raise ImageError(f"could not inspect image {tag}: {e}") from e
    info = info_from_image(img, tag, kind)
    if info.labels.get(LABEL_KIND) != kind:
        return None
    return info


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
    with build_lock(root, progress):
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
        "org.opencontainers.image.created": now(),
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
    info = info_from_image(img, tag, BASE_KIND)
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
    check_kind(kind)
    root = root or repo_root()
    if offline is None:
        offline = kind == "cpu"
    if kind == "cpu" and not offline:
        raise ImageError("the cpu image is built offline only (its base is harness-base:bookworm); drop --online")
    client = connect(client, timeout=BUILD_TIMEOUT_S)
    with build_lock(root, progress):
        return _build_image(kind, offline, client, progress, base_image=base_image, force=force, root=root)


def _build_image(kind: str, offline: bool, client: Any, progress: Progress, *,
                 base_image: str | None, force: bool, root: Path) -> ImageInfo:
    t0 = time.monotonic()
    ctx = prepare_context(kind, root)
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
                base = info_from_image(client.images.get(base_image), base_image, BASE_KIND)
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
        CREATED=now(),
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
    info = info_from_image(img, tag, kind)
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
    check_kind(kind)
    if offline is None:
        offline = kind == "cpu"
    with build_lock(root, progress):
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


def show_images(client: Any, kinds: list[str] | None = None) -> dict[str, dict[str, Any] | None]:
    """The local image of each kind (default: base, cpu, cuda) with its labels and why it is stale
    (``stale``: None when it matches this checkout); None for a kind that is absent."""
    out: dict[str, dict[str, Any] | None] = {}
    for kind in kinds or [BASE_KIND, *KINDS]:
        info = get_image(client, kind)
        out[kind] = None if info is None else {**info.to_json(), "stale": stale_reason(info)}
    return out
