"""What the run images are, without Docker: kinds, tags, recipe files and digests, labels, staleness.

The daemon-facing side (look-up, build, ensure) is harness/backends/docker/images.py.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import re
import shutil
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


def check_kind(kind: str, allow_base: bool = False) -> str:
    kinds = KINDS + ((BASE_KIND,) if allow_base else ())
    if kind not in kinds:
        raise ValueError(f"unknown image kind {kind!r}; expected one of {', '.join(kinds)}")
    return kind


def image_repo(kind: str) -> str:
    if check_kind(kind, allow_base=True) == BASE_KIND:
        return BASE_REPO
    return f"harness-{kind}"


def image_tag(kind: str, version: str = __version__) -> str:
    """The tag a run uses: ``harness-cpu:0.1.0``; the base is ``harness-base:bookworm``."""
    if check_kind(kind, allow_base=True) == BASE_KIND:
        return BASE_TAG
    return f"{image_repo(kind)}:{version}"


def latest_tag(kind: str) -> str:
    check_kind(kind)
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
    if check_kind(kind) == "cuda":
        return root / "Dockerfile.cuda"
    return images_dir(root) / kind / "Dockerfile"


def requirements_path(kind: str, root: Path | None = None) -> Path:
    return images_dir(root) / check_kind(kind) / "requirements.txt"


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
    if check_kind(kind, allow_base=True) == BASE_KIND:
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


def prepare_context(kind: str, root: Path | None = None) -> Path:
    """The build context of a kind, filled: its Dockerfile, requirements.txt and a wheels/ folder."""
    root = root or repo_root()
    ctx = context_dir(kind, root)
    (ctx / "wheels").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(dockerfile_path(kind, root), ctx / "Dockerfile")
    shutil.copyfile(requirements_path(kind, root), ctx / "requirements.txt")
    return ctx


def now() -> str:
    """The current UTC time as ISO 8601 with a Z (labels and records)."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
