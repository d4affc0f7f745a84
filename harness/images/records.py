"""The record of the last build of each image kind (``<repo>/.cache/images.json``), and the build lock."""

from __future__ import annotations

import contextlib
import fcntl
import json
from pathlib import Path
from typing import Any, Iterator

from harness.images.definitions import ImageInfo, Progress, now, record_path
from harness.paths import repo_root


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
    entry["built_at"] = now()
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
def build_lock(root: Path | None, progress: Progress) -> Iterator[None]:
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


