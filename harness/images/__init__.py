"""The container images a run uses: what they are (no Docker needed here).

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

This package, by job:

    definitions   kinds, tags, recipe files and their digest, labels, ImageInfo, ImageError, staleness
    records       the last build of each kind in ``<repo>/.cache/images.json``; the build lock
    wheels        downloading the wheels of an offline build with the host's pip

Looking images up in the daemon and building them is harness/backends/docker/images.py
(``get_image``, ``build_image``, ``ensure_image``, ``build_base``, ``show_images``); on the command
line: ``harness image build|ensure|show``.
"""

from __future__ import annotations

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
    LABEL_TORCH,
    LABEL_VERSION,
    ImageError,
    ImageInfo,
    Progress,
    base_script,
    check_kind,
    context_dir,
    dockerfile_path,
    image_repo,
    image_tag,
    images_dir,
    latest_tag,
    now,
    pinned_versions,
    prepare_context,
    recipe_digest,
    record_path,
    requirements_path,
    stale_reason,
    wheel_versions,
)
from harness.images.records import build_lock, read_records, record_build
from harness.images.wheels import download_wheels, manylinux_platforms

__all__ = [
    "BASE_DEV_PACKAGES", "BASE_KIND", "BASE_PACKAGES", "BASE_REPO", "BASE_SUITE", "BASE_TAG", "BUILD_TIMEOUT_S",
    "DEFAULT_CUDA_BASE", "DEFAULT_DEBIAN_MIRROR", "KINDS", "LABEL_KIND", "LABEL_PYTHON", "LABEL_RECIPE",
    "LABEL_TORCH", "LABEL_VERSION", "ImageError", "ImageInfo", "Progress", "base_script", "build_lock",
    "check_kind", "context_dir", "dockerfile_path", "download_wheels", "image_repo", "image_tag", "images_dir",
    "latest_tag", "manylinux_platforms", "now", "pinned_versions", "prepare_context", "read_records",
    "recipe_digest", "record_build", "record_path", "requirements_path", "stale_reason", "wheel_versions",
]
