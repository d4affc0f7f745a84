"""A result bundle: what one lab hands another. Its layout, and `harness export`.

    manifest.json          lab, harness version, creation time, fingerprints, run ids, one sha256 per file
    manifest.sig           the lab's ed25519 signature over manifest.json's bytes, and the key that made it
    records/RUN_ID.json    the selected records, as the lab's store holds them
    sources/SHA256.py      the train.py each record ran, named by its sha256
    baselines.json         the lab's class baselines for the bundle's benchmarks (when it has any)
    models/RUN_ID/...      with --with-models: each run's exported model, for a re-score elsewhere

A bundle is a .tar.gz file or a directory with these files. Every file is in the manifest with its hash,
and the signature covers the manifest, so one changed byte anywhere is caught by `harness import`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import __version__, contract
from harness.exchange.keys import LabKey
from harness.fixedcode import file_sha256
from harness.scoring.baselines import Baselines, load_baselines
from harness.store import ResultStore

FORMAT = 1
KIND = "harness-bundle"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"


class BundleError(ValueError):
    """A bundle that cannot be written or read; the message names the file or run and the check."""


@dataclass
class ExportReport:
    path: Path
    lab: str
    runs: list[str]
    fingerprints: dict[str, list[str]]
    files: int
    models: int
    bundle_id: str
    skipped: list[str] = field(default_factory=list)  # run ids left out, with why

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "lab": self.lab, "runs": self.runs, "fingerprints": self.fingerprints,
                "files": self.files, "models": self.models, "bundle_id": self.bundle_id, "skipped": self.skipped}


def exportable(record: dict[str, Any]) -> str | None:
    """Why a record stays out of a default export (None: it goes in): only clean verified runs travel."""
    if record.get("status") != "ok":
        return f"status {record.get('status')}"
    if record.get("trust") != "verified":
        return f"trust {record.get('trust')}"
    if record.get("flags"):
        return "flagged " + ",".join(record["flags"])
    return None


def _source_of(record: dict[str, Any]) -> Path | None:
    """The train.py the run ran: the run folder's copy, else the original path, when its hash matches."""
    sub = record["provenance"]["submission"]
    want = sub.get("sha256")
    candidates = [Path(record["log_path"]).parent / contract.RUN_TRAIN_PY, Path(sub.get("path") or "")]
    for p in candidates:
        if p.is_file() and file_sha256(p) == want:
            return p
    return None


def _model_files(record: dict[str, Any]) -> list[Path]:
    out_dir = Path(record["log_path"]).parent / contract.RUN_OUT
    return [p for p in (out_dir / contract.OUT_MODEL, out_dir / contract.OUT_EXPORT_INFO) if p.is_file()]


def select_records(store: ResultStore, benchmark: str | None = None, since: str | None = None,
                   run_ids: Iterable[str] = (), include_all: bool = False) -> tuple[list[dict[str, Any]], list[str]]:
    """The records to export, oldest first, and the run ids left out with why."""
    wanted = list(run_ids)
    if wanted:
        records = [store.get(r) for r in wanted]
    else:
        rows = store.list(benchmark=benchmark, include_flagged=True, include_unverified=True).rows
        records = [store.get(r.run_id) for r in rows]
    picked, skipped = [], []
    for rec in records:
        if benchmark and rec["provenance"]["benchmark"]["name"] != benchmark:
            continue
        if since and rec["provenance"]["created_at"] < since:
            continue
        why = None if include_all else exportable(rec)
        if why:
            skipped.append(f"{rec['run_id']}: {why} (--all exports it, flags kept)")
            continue
        picked.append(rec)
    picked.sort(key=lambda r: r["run_id"])
    return picked, skipped


def export_bundle(store: ResultStore, key: LabKey, out: Path, *, benchmark: str | None = None,
                  since: str | None = None, run_ids: Iterable[str] = (), include_all: bool = False,
                  with_models: bool = False, baselines_path: Path | None = None) -> ExportReport:
    """Write a signed bundle of the selected records to out (.tar.gz / .tgz: a file; else a directory)."""
    records, skipped = select_records(store, benchmark, since, run_ids, include_all)
    if not records:
        raise BundleError(f"nothing to export from {store.root}: no record matches"
                          + (f" ({len(skipped)} left out: {skipped[0]}{' ...' if len(skipped) > 1 else ''})"
                             if skipped else ""))
    files: dict[str, bytes | Path] = {}
    fingerprints: dict[str, set[str]] = {}
    models = 0
    for rec in records:
        run_id = rec["run_id"]
        bench = rec["provenance"]["benchmark"]
        fp = bench.get("fingerprint")
        if not fp:
            raise BundleError(f"run {run_id} has no benchmark fingerprint (recorded before fingerprints "
                              "existed): it cannot be compared elsewhere; leave it out with --run or --since")
        fingerprints.setdefault(bench["name"], set()).add(fp)
        files[f"records/{run_id}.json"] = _canonical(rec)
        source = _source_of(rec)
        if source is None:
            raise BundleError(f"run {run_id}: the train.py it ran (sha256 {rec['provenance']['submission']['sha256']})"
                              " is neither in its run folder nor at its original path; leave the run out with --run")
        files[f"sources/{file_sha256(source)}.py"] = source
        if with_models:
            found = _model_files(rec)
            for p in found:
                files[f"models/{run_id}/{p.name}"] = p
            models += bool(found)
    baselines = _baselines_for(baselines_path, set(fingerprints))
    if baselines is not None:
        files["baselines.json"] = _canonical(baselines.to_dict())
    manifest = {
        "format": FORMAT, "kind": KIND, "lab": key.lab, "public_key": key.public_line,
        "harness_version": __version__, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "fingerprints": {b: sorted(v) for b, v in sorted(fingerprints.items())},
        "runs": [r["run_id"] for r in records],
        "files": {name: _sha(data) for name, data in sorted(files.items())},
    }
    manifest_bytes = _canonical(manifest)
    signature = {"format": FORMAT, "lab": key.lab, "public_key": key.public_line,
                 "signature": base64.b64encode(key.sign(manifest_bytes)).decode()}
    files[MANIFEST] = manifest_bytes
    files[SIGNATURE] = _canonical(signature)
    _write(out, files)
    return ExportReport(out, key.lab, manifest["runs"], manifest["fingerprints"], len(files), models,
                        hashlib.sha256(manifest_bytes).hexdigest(), skipped)


def _baselines_for(path: Path | None, benchmarks: set[str]) -> Baselines | None:
    if path is None or not Path(path).is_file():
        return None
    full = load_baselines(path)
    kept = Baselines({b: full.data[b] for b in full.benchmarks() if b in benchmarks})
    return kept if kept.benchmarks() else None


def _canonical(doc: Any) -> bytes:
    return (json.dumps(doc, indent=1, sort_keys=True, allow_nan=False) + "\n").encode()


def _sha(data: bytes | Path) -> str:
    return hashlib.sha256(data).hexdigest() if isinstance(data, bytes) else file_sha256(data)


def is_tarball(path: Path) -> bool:
    return path.name.endswith((".tar.gz", ".tgz"))


def _write(out: Path, files: dict[str, bytes | Path]) -> None:
    """All or nothing: built beside the target, then renamed into place."""
    out = Path(out)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise BundleError(f"{out} already exists: choose a new name (a bundle is never overwritten)")
    out.parent.mkdir(parents=True, exist_ok=True)
    if is_tarball(out):
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        try:
            with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
                for name, data in sorted(files.items()):
                    blob = data if isinstance(data, bytes) else data.read_bytes()
                    info = tarfile.TarInfo(name)
                    info.size, info.mode, info.mtime = len(blob), 0o644, 0
                    tar.addfile(info, io.BytesIO(blob))
            os.chmod(tmp, 0o644)
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, data in files.items():
            target = tmp_dir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(data, bytes):
                target.write_bytes(data)
            else:
                shutil.copyfile(data, target)
        if out.exists():
            out.rmdir()
        os.replace(tmp_dir, out)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
