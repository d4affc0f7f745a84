"""`harness sync REPO`: exchange bundles through a git repository the labs share.

The repository holds `bundles/LAB/*.tar.gz`, one folder per lab. A sync clones it, exports this lab's runs
that none of its published bundles has yet into a new bundle in `bundles/THIS_LAB/`, commits and pushes it
(on a rejected push: fetch, rebase, push again), then imports every other lab's bundles (each checked as
`harness import` does; one already imported adds nothing; a refused one is reported and changes nothing).
Any git remote works the same way; the tests use a local bare repository. git is run as a program.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.exchange.bundle import MANIFEST, SIGNATURE, BundleError, export_bundle, select_records
from harness.exchange.importer import ImportRefused, import_bundle
from harness.exchange.keys import LabKey, TrustedKey
from harness.store import ResultStore

BUNDLES = "bundles"
PUSH_TRIES = 3
MAX_MANIFEST_BYTES = 64 << 20


class SyncError(RuntimeError):
    """git failed (the command and its message are named), or the repository is not a bundle exchange."""


@dataclass
class SyncReport:
    repo: str
    lab: str
    pushed: str | None = None  # the bundle this sync published (path in the repository), if any
    pushed_runs: list[str] = field(default_factory=list)
    imported: dict[str, dict[str, Any]] = field(default_factory=dict)  # bundle path -> import report
    refused: dict[str, str] = field(default_factory=dict)  # bundle path -> why

    def to_dict(self) -> dict[str, Any]:
        return {"repo": self.repo, "lab": self.lab, "pushed": self.pushed, "pushed_runs": self.pushed_runs,
                "imported": self.imported, "refused": self.refused}


def _git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, timeout=300)
    if proc.returncode:
        raise SyncError(f"git {' '.join(args)} failed in {cwd}: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def _published_runs(folder: Path, key: LabKey) -> set[str]:
    """Run ids in this lab's bundles already in the repository. Only a manifest this lab's key signed counts:
    a file someone else put in bundles/THIS_LAB/ cannot mark runs as published."""
    runs: set[str] = set()
    public = key.private.public_key()
    for path in sorted(folder.glob("*.tar.gz")):
        try:
            with tarfile.open(path, "r:gz") as tar:
                manifest = tar.extractfile(MANIFEST).read(MAX_MANIFEST_BYTES + 1)  # type: ignore[union-attr]
                sig = json.loads(tar.extractfile(SIGNATURE).read(MAX_MANIFEST_BYTES))  # type: ignore[union-attr]
            public.verify(base64.b64decode(sig["signature"], validate=True), manifest)
            doc = json.loads(manifest)
            if len(manifest) <= MAX_MANIFEST_BYTES and doc.get("lab") == key.lab:
                runs.update(r for r in doc.get("runs", []) if isinstance(r, str))
        except Exception:  # noqa: BLE001 - unreadable or not ours: it publishes nothing; its runs go out again
            continue
    return runs


def sync(repo: str, key: LabKey, results_dir: Path, trusted: list[TrustedKey], *, benchmark: str | None = None,
         with_models: bool = False, allow_unsigned: bool = False, baselines_path: Path | None = None) -> SyncReport:
    report = SyncReport(repo=repo, lab=key.lab)
    work = Path(tempfile.mkdtemp(prefix="harness-sync-"))
    try:
        clone = work / "repo"
        proc = subprocess.run(["git", "clone", "-q", repo, str(clone)], capture_output=True, text=True, timeout=600)
        if proc.returncode:
            raise SyncError(f"git clone {repo} failed: {proc.stderr.strip()}")
        mine = clone / BUNDLES / key.lab
        _publish(clone, mine, key, results_dir, report, benchmark, with_models, baselines_path)
        for lab_dir in sorted((clone / BUNDLES).iterdir() if (clone / BUNDLES).is_dir() else []):
            if not lab_dir.is_dir() or lab_dir.name == key.lab:
                continue
            for bundle in sorted(lab_dir.glob("*.tar.gz")):
                rel = bundle.relative_to(clone).as_posix()
                try:
                    got = import_bundle(bundle, results_dir, trusted, allow_unsigned=allow_unsigned,
                                        local_lab=key.lab)
                    report.imported[rel] = got.to_dict()
                except ImportRefused as e:
                    report.refused[rel] = str(e)
                except Exception as e:  # noqa: BLE001 - one bad bundle in a shared repository stops no other
                    report.refused[rel] = f"{type(e).__name__}: {e}"
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def _publish(clone: Path, mine: Path, key: LabKey, results_dir: Path, report: SyncReport, benchmark: str | None,
             with_models: bool, baselines_path: Path | None) -> None:
    store = ResultStore(results_dir)
    published = _published_runs(mine, key)
    records, _ = select_records(store, benchmark=benchmark)
    new = [r["run_id"] for r in records if r["run_id"] not in published and
           r["provenance"]["benchmark"].get("fingerprint")]
    if not new:
        return
    name = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{key.lab}.tar.gz"
    target = mine / name
    try:
        export_bundle(store, key, target, run_ids=new, with_models=with_models, baselines_path=baselines_path)
    except BundleError as e:
        raise SyncError(f"exporting this lab's new runs failed: {e}") from None
    rel = target.relative_to(clone).as_posix()
    _git(clone, "add", rel)
    _git(clone, "-c", f"user.name=harness ({key.lab})", "-c", "user.email=harness@localhost", "commit", "-q",
         "-m", f"{key.lab}: {len(new)} run(s)")
    for attempt in range(PUSH_TRIES):
        proc = subprocess.run(["git", "-C", str(clone), "push", "-q", "origin", "HEAD"], capture_output=True,
                              text=True, timeout=600)
        if proc.returncode == 0:
            break
        if attempt == PUSH_TRIES - 1:
            raise SyncError(f"git push to {report.repo} failed {PUSH_TRIES} times: {proc.stderr.strip()}")
        _git(clone, "pull", "-q", "--rebase", "origin", _git(clone, "rev-parse", "--abbrev-ref", "HEAD").strip())
    report.pushed, report.pushed_runs = rel, new
