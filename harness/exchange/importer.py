"""`harness import`: check a bundle from another lab, all of it, then file its records under that lab.

Checks, in order; the first that fails refuses the bundle and names the file and the check:
  1. the layout: a manifest of this format, only regular files, every file listed, nothing unlisted;
  2. the signature: made by a key the trusted-keys file gives to the manifest's lab (--allow-unsigned takes
     a bundle without one, or from a lab not trusted, and labels its runs `unsigned`; a signature that is
     there and does not verify is refused even then: that is a changed bundle);
  3. every file's sha256 against the manifest;
  4. every record against the result schema; its file name, its train.py (by sha256) present in the bundle;
  5. each run id: already here with the same content adds nothing; with other content, refused.
Then the fingerprint: a record whose benchmark fingerprint differs from this machine's is imported but
labelled `incomparable` (kept off the leaderboard unless asked).

Nothing is written before every check passed. Imported records go to RESULTS/labs/LAB/ (a store of
their own, with the bundle's sources, baselines and models), never among this lab's runs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.atomic import write_bytes_atomic
from harness.benchmarks import BenchmarkError, Benchmark, load_benchmarks
from harness.data import DataError
from harness.exchange import bundle as fmt
from harness.exchange.keys import LAB_NAME, KeyProblem, TrustedKey, verify
from harness.exchange.labs import LabStore, existing_record
from harness.fingerprint import local_fingerprint
from harness.store import RecordError, ResultStore, current_record

MAX_MEMBERS = 100_000


class ImportRefused(ValueError):
    """The bundle failed a check; nothing was written. The message names the file and the check."""


@dataclass
class ImportReport:
    lab: str
    bundle_id: str
    signature: str  # verified | unsigned
    added: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    incomparable: dict[str, str] = field(default_factory=dict)  # run id -> why
    store: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"lab": self.lab, "bundle_id": self.bundle_id, "signature": self.signature, "added": self.added,
                "already": self.already, "incomparable": self.incomparable, "store": self.store}


@contextmanager
def opened(path: Path) -> Iterator[Path]:
    """The bundle as a directory: a directory as it is, a tarball unpacked (regular files only) to a temp dir."""
    path = Path(path)
    if path.is_dir():
        yield path
        return
    if not path.is_file():
        raise ImportRefused(f"{path}: no such bundle (a .tar.gz file or a directory)")
    tmp = Path(tempfile.mkdtemp(prefix="harness-import-"))
    try:
        try:
            with tarfile.open(path, mode="r:*") as tar:
                members = tar.getmembers()
                if len(members) > MAX_MEMBERS:
                    raise ImportRefused(f"{path}: {len(members)} entries, more than a bundle has")
                for m in members:
                    if not (m.isfile() or m.isdir()):
                        raise ImportRefused(f"{path}: {m.name}: not a regular file (links and devices are refused)")
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError, EOFError) as e:
            raise ImportRefused(f"{path}: not a readable .tar.gz bundle ({e})") from None
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _listed_files(root: Path) -> set[str]:
    out = set()
    for p in root.rglob("*"):
        if p.is_symlink() or not (p.is_file() or p.is_dir()):
            raise ImportRefused(f"{p.relative_to(root)}: not a regular file (links and devices are refused)")
        if p.is_file():
            out.add(p.relative_to(root).as_posix())
    return out


def _read_json(root: Path, name: str) -> Any:
    try:
        return json.loads((root / name).read_bytes())
    except FileNotFoundError:
        raise ImportRefused(f"{name}: missing from the bundle") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ImportRefused(f"{name}: not JSON ({e})") from None


def _check_manifest(manifest: Any) -> None:
    if not isinstance(manifest, dict) or manifest.get("kind") != fmt.KIND or manifest.get("format") != fmt.FORMAT:
        raise ImportRefused(f"{fmt.MANIFEST}: not a harness bundle manifest of format {fmt.FORMAT}")
    for key, kind in (("lab", str), ("runs", list), ("files", dict), ("fingerprints", dict)):
        if not isinstance(manifest.get(key), kind):
            raise ImportRefused(f"{fmt.MANIFEST}: field '{key}' missing or not a {kind.__name__}")
    if not LAB_NAME.match(manifest["lab"]):
        raise ImportRefused(f"{fmt.MANIFEST}: lab {manifest['lab']!r} is not a lab name")


def check_signature(root: Path, manifest: dict[str, Any], manifest_bytes: bytes,
                    trusted: list[TrustedKey] | None, allow_unsigned: bool) -> tuple[str, str | None]:
    """('verified', key line) or ('unsigned', None); ImportRefused otherwise."""
    lab = manifest["lab"]
    if not (root / fmt.SIGNATURE).is_file():
        if allow_unsigned:
            return "unsigned", None
        raise ImportRefused(f"{fmt.SIGNATURE}: missing: the bundle is unsigned (--allow-unsigned imports it, "
                            "labelled unsigned)")
    sig = _read_json(root, fmt.SIGNATURE)
    if not isinstance(sig, dict) or sig.get("lab") != lab or not isinstance(sig.get("public_key"), str):
        raise ImportRefused(f"{fmt.SIGNATURE}: malformed, or for another lab than the manifest's ({lab!r})")
    try:
        raw = base64.b64decode(sig.get("signature", ""), validate=True)
    except (binascii.Error, ValueError):
        raise ImportRefused(f"{fmt.SIGNATURE}: the signature is not base64") from None
    known = [t for t in (trusted or []) if t.lab == lab]
    if not known:
        if allow_unsigned:
            return "unsigned", None
        raise ImportRefused(f"{fmt.SIGNATURE}: lab {lab!r} is not in the trusted keys: add its `harness keys "
                            "show` line to trust it (or --allow-unsigned to import it labelled unsigned)")
    try:
        t = verify(known, lab, sig["public_key"], raw, manifest_bytes)
    except KeyProblem as e:
        raise ImportRefused(f"{fmt.SIGNATURE}: {e}") from None
    return "verified", t.line


def _check_files(root: Path, manifest: dict[str, Any]) -> None:
    listed = manifest["files"]
    present = _listed_files(root) - {fmt.MANIFEST, fmt.SIGNATURE}
    for name in sorted(set(listed) - present):
        raise ImportRefused(f"{name}: listed in the manifest but missing from the bundle")
    for name in sorted(present - set(listed)):
        raise ImportRefused(f"{name}: in the bundle but not in the manifest")
    for name in sorted(listed):
        got = hashlib.sha256((root / name).read_bytes()).hexdigest()
        if got != listed[name]:
            raise ImportRefused(f"{name}: sha256 {got[:16]}... is not the manifest's {str(listed[name])[:16]}...: "
                                "the file changed after the bundle was made")


def _check_records(root: Path, manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    records: dict[str, dict[str, Any]] = {}
    names = {n for n in manifest["files"] if n.startswith("records/")}
    if names != {f"records/{r}.json" for r in manifest["runs"]}:
        raise ImportRefused(f"{fmt.MANIFEST}: 'runs' does not match the records/ files")
    for run_id in manifest["runs"]:
        name = f"records/{run_id}.json"
        doc = _read_json(root, name)
        try:
            rec = current_record(doc)
        except RecordError as e:
            raise ImportRefused(f"{name}: not a valid result record: {e}") from None
        if rec["run_id"] != run_id:
            raise ImportRefused(f"{name}: holds run {rec['run_id']!r}, not {run_id!r}")
        sha = rec["provenance"]["submission"].get("sha256")
        if f"sources/{sha}.py" not in manifest["files"]:
            raise ImportRefused(f"{name}: the train.py it ran (sources/{sha}.py) is not in the bundle")
        records[run_id] = rec
    return records


def _local_fingerprint(name: str, benchmarks: dict[str, Benchmark], cache_root: Path | None) -> tuple[str | None, str]:
    """This lab's fingerprint of a benchmark, or None and why there is none."""
    bench = benchmarks.get(name)
    if bench is None:
        return None, f"benchmark {name!r} is not in this lab's benchmarks.yaml"
    try:
        return local_fingerprint(bench, cache_root / name if cache_root else None), ""
    except DataError:
        return None, f"benchmark {name!r} is not prepared here (harness prepare -b {name})"


def _comparability(records: dict[str, dict[str, Any]], benchmarks: dict[str, Benchmark],
                   cache_root: Path | None) -> dict[str, str]:
    """Run id -> why it is not comparable here (absent: it is)."""
    local: dict[str, tuple[str | None, str]] = {}
    why: dict[str, str] = {}
    for run_id, rec in records.items():
        name = rec["provenance"]["benchmark"]["name"]
        theirs = rec["provenance"]["benchmark"].get("fingerprint")
        if name not in local:
            local[name] = _local_fingerprint(name, benchmarks, cache_root)
        mine, missing = local[name]
        if mine is None:
            why[run_id] = missing
        elif theirs != mine:
            why[run_id] = (f"fingerprint {str(theirs)[:17]}... is not this lab's {mine[:17]}... "
                           f"(fixed code, data, budget, clock or limits of {name} differ)")
    return why


def import_bundle(path: Path, results_dir: Path, trusted: list[TrustedKey] | None, *,
                  allow_unsigned: bool = False, local_lab: str | None = None,
                  benchmarks: dict[str, Benchmark] | None = None, cache_root: Path | None = None) -> ImportReport:
    """Check the bundle at path and file its records under RESULTS/labs/LAB; ImportRefused changes nothing."""
    if benchmarks is None:
        try:
            benchmarks = load_benchmarks()
        except BenchmarkError:
            benchmarks = {}
    with opened(path) as root:
        try:
            manifest_bytes = (root / fmt.MANIFEST).read_bytes()
        except FileNotFoundError:
            raise ImportRefused(f"{fmt.MANIFEST}: missing: {path} is not a harness bundle") from None
        manifest = _read_json(root, fmt.MANIFEST)
        _check_manifest(manifest)
        lab = manifest["lab"]
        if local_lab and lab == local_lab:
            raise ImportRefused(f"{fmt.MANIFEST}: the bundle is this lab's own ({lab!r}): its runs are in "
                                "your store already")
        signature, key_line = check_signature(root, manifest, manifest_bytes, trusted, allow_unsigned)
        _check_files(root, manifest)
        records = _check_records(root, manifest)
        labs = LabStore(results_dir, lab)
        own = ResultStore(results_dir)
        new, already = [], []
        for run_id, rec in records.items():
            existing = labs.existing(run_id) or existing_record(own, run_id)
            if existing is None:
                new.append(run_id)
            elif existing == rec:
                already.append(run_id)
            else:
                raise ImportRefused(f"records/{run_id}.json: run {run_id} is already here with different content "
                                    f"({labs.records.path_for(run_id) if labs.existing(run_id) else own.path_for(run_id)})")
        incomparable = _comparability(records, benchmarks, cache_root)
        bundle_id = hashlib.sha256(manifest_bytes).hexdigest()
        report = ImportReport(lab, bundle_id, signature, added=new, already=already,
                              incomparable={r: w for r, w in incomparable.items() if r in new}, store=str(labs.root))
        if not new:
            return report
        # -- every check passed: write (sources and models first, the records, the ledger last) --
        for name in sorted(manifest["files"]):
            if name.startswith(("sources/", "models/")):
                target = labs.root / name
                if not target.exists():
                    write_bytes_atomic(target, (root / name).read_bytes())
        if "baselines.json" in manifest["files"]:
            write_bytes_atomic(labs.root / "baselines.json", (root / "baselines.json").read_bytes())
        for run_id in new:
            labs.records.put(records[run_id])
        labs.record_import(bundle_id, {
            "imported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "source": str(path),
            "signature": signature, "public_key": key_line, "created_at": manifest.get("created_at"),
            "harness_version": manifest.get("harness_version"), "runs": sorted(records)},
            {r: {"bundle": bundle_id, "signature": signature, "incomparable": incomparable.get(r)} for r in new})
        return report

