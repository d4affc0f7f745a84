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

Nothing is written before every check passed, and every check reads a private copy of the bundle made
first (regular files only, names from a fixed layout, sizes capped), so a bundle that changes while it
is read cannot pass one version to the checks and another to the store. Signed imports go to
RESULTS/labs/LAB/, unsigned ones to RESULTS/labs-unsigned/LAB/ (an unsigned bundle in the name of a lab
whose key is trusted here is refused): a store of their own each, never among this lab's runs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
import zlib
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
from harness.exchange.labs import LabStore, LedgerError, existing_record, other_lab_stores
from harness.fingerprint import local_fingerprint
from harness.fixedcode import file_sha256
from harness.scoring.baselines import BaselineFormatError, Baselines
from harness.store import RecordError, ResultStore, current_record

MAX_MEMBERS = 100_000
MAX_FILE_BYTES = 4 << 30  # one exported climbmix model is well under this
MAX_TOTAL_BYTES = 16 << 30  # a bundle unpacked; a tar bomb stops here, before it fills the disk
NAME_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
RUN_ID = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{6}")
SHA256 = re.compile(r"[0-9a-f]{64}")


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


def _safe_name(name: str) -> str:
    """A bundle member's name as a relative path of plain parts; ImportRefused for anything else."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or not all(NAME_PART.fullmatch(p) for p in parts):
        raise ImportRefused(f"{name!r}: not a bundle file name (plain letters, digits, '.', '_', '-' parts only)")
    return "/".join(parts)


class _Budget:
    """The caps on a bundle's unpacked size and number of files."""

    def __init__(self) -> None:
        self.files = self.total = 0

    def take(self, name: str, size: int) -> None:
        self.files += 1
        self.total += size
        if self.files > MAX_MEMBERS:
            raise ImportRefused(f"more than {MAX_MEMBERS} files: not a bundle")
        if size > MAX_FILE_BYTES or self.total > MAX_TOTAL_BYTES:
            raise ImportRefused(f"{name}: the bundle unpacks to more than {MAX_TOTAL_BYTES >> 30} GiB, or this "
                                f"file to more than {MAX_FILE_BYTES >> 30} GiB")


def _copy_stream(src: Any, dest: Path, name: str, limit: int) -> None:
    if dest.exists():
        raise ImportRefused(f"{name}: in the bundle twice")
    dest.parent.mkdir(parents=True, exist_ok=True)
    got = 0
    with open(dest, "xb") as out:
        while chunk := src.read(1 << 20):
            got += len(chunk)
            if got > limit:
                raise ImportRefused(f"{name}: larger than its header says, or than {MAX_FILE_BYTES >> 30} GiB")
            out.write(chunk)


def _copy_tar(path: Path, tmp: Path) -> None:
    budget = _Budget()
    try:
        with tarfile.open(path, mode="r:*") as tar:
            for m in tar:  # one header at a time: the caps hold before anything is unpacked
                if m.isdir():
                    continue
                if not m.isfile() or m.issparse():
                    raise ImportRefused(f"{m.name}: not a regular file (links, devices and sparse files are refused)")
                name = _safe_name(m.name)
                budget.take(name, m.size)
                src = tar.extractfile(m)
                if src is None:
                    raise ImportRefused(f"{name}: cannot be read from the archive")
                _copy_stream(src, tmp / name, name, m.size)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise ImportRefused(f"{path}: not a readable .tar.gz bundle ({e})") from None


def _copy_dir(path: Path, tmp: Path) -> None:
    budget = _Budget()
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        for d in dirnames:
            if stat.S_ISLNK(os.lstat(os.path.join(dirpath, d)).st_mode):
                raise ImportRefused(f"{os.path.relpath(os.path.join(dirpath, d), path)}: a link (refused)")
        for f in filenames:
            full = os.path.join(dirpath, f)
            rel = os.path.relpath(full, path)
            # O_NOFOLLOW and O_NONBLOCK: a file swapped for a link or a FIFO after the walk is refused, not followed
            try:
                fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError as e:
                raise ImportRefused(f"{rel}: cannot be read ({e.strerror}; links are refused)") from None
            with os.fdopen(fd, "rb") as src:
                st = os.fstat(src.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise ImportRefused(f"{rel}: not a regular file (links, devices and FIFOs are refused)")
                name = _safe_name(rel.replace(os.sep, "/"))
                budget.take(name, st.st_size)
                _copy_stream(src, tmp / name, name, min(st.st_size, MAX_FILE_BYTES))


@contextmanager
def private_copy(path: Path) -> Iterator[Path]:
    """The bundle copied to a private temp folder (a .tar.gz unpacked, a directory copied): every check and
    every write reads this copy, never the original again."""
    path = Path(path)
    if not (path.is_dir() or path.is_file()):
        raise ImportRefused(f"{path}: no such bundle (a .tar.gz file or a directory)")
    tmp = Path(tempfile.mkdtemp(prefix="harness-import-"))
    try:
        (_copy_dir if path.is_dir() else _copy_tar)(path, tmp)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _present(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _read_json(root: Path, name: str) -> Any:
    try:
        return json.loads((root / name).read_bytes())
    except FileNotFoundError:
        raise ImportRefused(f"{name}: missing from the bundle") from None
    except OSError as e:
        raise ImportRefused(f"{name}: cannot be read ({e.strerror})") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ImportRefused(f"{name}: not JSON ({e})") from None


def _check_manifest(manifest: Any) -> None:
    if not isinstance(manifest, dict) or manifest.get("kind") != fmt.KIND or manifest.get("format") != fmt.FORMAT:
        raise ImportRefused(f"{fmt.MANIFEST}: not a harness bundle manifest of format {fmt.FORMAT}")
    for key, kind in (("lab", str), ("runs", list), ("files", dict), ("fingerprints", dict)):
        if not isinstance(manifest.get(key), kind):
            raise ImportRefused(f"{fmt.MANIFEST}: field '{key}' missing or not a {kind.__name__}")
    if not LAB_NAME.fullmatch(manifest["lab"]):
        raise ImportRefused(f"{fmt.MANIFEST}: lab {manifest['lab']!r} is not a lab name")
    for run_id in manifest["runs"]:
        if not (isinstance(run_id, str) and RUN_ID.fullmatch(run_id)):
            raise ImportRefused(f"{fmt.MANIFEST}: run {run_id!r} is not a run id")
    if len(set(manifest["runs"])) != len(manifest["runs"]):
        raise ImportRefused(f"{fmt.MANIFEST}: a run is listed twice")
    for name, sha in manifest["files"].items():
        if not (isinstance(sha, str) and SHA256.fullmatch(sha)):
            raise ImportRefused(f"{fmt.MANIFEST}: the hash of {name!r} is not a sha256")


def _layout_problem(name: str, runs: set[str]) -> str | None:
    """Why a file name is not part of a bundle's layout (None: it is)."""
    parts = name.split("/")
    if name == "baselines.json":
        return None
    if len(parts) == 2 and parts[0] == "records" and parts[1].endswith(".json") and parts[1][:-5] in runs:
        return None
    if len(parts) == 2 and parts[0] == "sources" and parts[1].endswith(".py") and SHA256.fullmatch(parts[1][:-3]):
        return None
    if len(parts) == 3 and parts[0] == "models" and parts[1] in runs and NAME_PART.fullmatch(parts[2]):
        return None
    return ("not a bundle file (baselines.json, records/RUN.json, sources/SHA256.py, models/RUN/FILE, with RUN "
            "one of the manifest's runs)")


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
    if (not isinstance(sig, dict) or sig.get("lab") != lab or not isinstance(sig.get("public_key"), str)
            or not isinstance(sig.get("signature"), str)):
        raise ImportRefused(f"{fmt.SIGNATURE}: malformed, or for another lab than the manifest's ({lab!r})")
    try:
        raw = base64.b64decode(sig.get("signature", ""), validate=True)
    except (binascii.Error, ValueError):
        raise ImportRefused(f"{fmt.SIGNATURE}: the signature is not base64") from None
    known = [t for t in (trusted or []) if t.lab == lab]
    if not known:
        if allow_unsigned:  # signed, but by a lab not trusted here: as good as unsigned
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
    runs = set(manifest["runs"])
    present = _present(root) - {fmt.MANIFEST, fmt.SIGNATURE}
    for name in sorted(listed):
        why = _layout_problem(name, runs)
        if why:
            raise ImportRefused(f"{name}: {why}")
    for name in sorted(set(listed) - present):
        raise ImportRefused(f"{name}: listed in the manifest but missing from the bundle")
    for name in sorted(present - set(listed)):
        raise ImportRefused(f"{name}: in the bundle but not in the manifest")
    for name in sorted(listed):
        got = file_sha256(root / name)
        if got != listed[name]:
            raise ImportRefused(f"{name}: sha256 {got[:16]}... is not the manifest's {str(listed[name])[:16]}...: "
                                "the file changed after the bundle was made")
        if name.startswith("sources/") and got != name[len("sources/"):-len(".py")]:
            raise ImportRefused(f"{name}: its content's sha256 is {got[:16]}..., not its name")
    if "baselines.json" in listed:
        try:
            Baselines.from_dict(json.loads((root / "baselines.json").read_bytes()), "baselines.json")
        except (ValueError, BaselineFormatError) as e:
            raise ImportRefused(f"baselines.json: not a baselines file ({e})") from None


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
    with private_copy(path) as root:
        if not (root / fmt.MANIFEST).is_file():
            raise ImportRefused(f"{fmt.MANIFEST}: missing: {path} is not a harness bundle")
        manifest_bytes = (root / fmt.MANIFEST).read_bytes()
        try:  # the bytes the signature covers, parsed once: what is checked is what was signed
            manifest = json.loads(manifest_bytes)
        except (ValueError, UnicodeDecodeError) as e:
            raise ImportRefused(f"{fmt.MANIFEST}: not JSON ({e})") from None
        _check_manifest(manifest)
        lab = manifest["lab"]
        if local_lab and lab == local_lab:
            raise ImportRefused(f"{fmt.MANIFEST}: the bundle is this lab's own ({lab!r}): its runs are in "
                                "your store already")
        signature, key_line = check_signature(root, manifest, manifest_bytes, trusted, allow_unsigned)
        if signature == "unsigned" and any(t.lab == lab for t in trusted or []):
            raise ImportRefused(f"{fmt.SIGNATURE}: lab {lab!r} is trusted here, so its bundles must carry its "
                                "signature: an unsigned bundle in its name is refused")
        _check_files(root, manifest)
        records = _check_records(root, manifest)
        labs = LabStore(results_dir, lab, signed=signature == "verified")
        with labs.lock():
            try:
                ledger = labs.ledger()
            except LedgerError as e:
                raise ImportRefused(str(e)) from None
            new, already = _new_runs(records, labs, ledger, ResultStore(results_dir), results_dir)
            incomparable = _comparability(records, benchmarks, cache_root)
            bundle_id = hashlib.sha256(manifest_bytes).hexdigest()
            report = ImportReport(lab, bundle_id, signature, added=new, already=already,
                                  incomparable={r: w for r, w in incomparable.items() if r in new},
                                  store=str(labs.root))
            if not new:
                return report
            # -- every check passed: the new runs' sources and models, their records, then the ledger --
            shas = {records[r]["provenance"]["submission"]["sha256"] for r in new}
            for name in sorted(manifest["files"]):
                parts = name.split("/")
                if (parts[0] == "sources" and parts[1][:-3] in shas) or (parts[0] == "models" and parts[1] in new):
                    target = labs.root / name
                    if not target.exists():
                        write_bytes_atomic(target, (root / name).read_bytes())
            if "baselines.json" in manifest["files"]:
                write_bytes_atomic(labs.root / "baselines.json", (root / "baselines.json").read_bytes())
            for run_id in new:
                labs.records.put(records[run_id])
            labs.record_import(ledger, bundle_id, {
                "imported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "source": str(path),
                "signature": signature, "public_key": key_line, "created_at": manifest.get("created_at"),
                "harness_version": manifest.get("harness_version"), "runs": sorted(records)},
                {r: {"bundle": bundle_id, "signature": signature, "incomparable": incomparable.get(r)} for r in new})
            return report


def _new_runs(records: dict[str, dict[str, Any]], labs: LabStore, ledger: dict[str, Any], own: ResultStore,
              results_dir: Path) -> tuple[list[str], list[str]]:
    """(new, already): a run stored and in the ledger with the same content is already here; stored but not
    in the ledger (an import cut short) is written again; here with other content anywhere is refused."""
    new, already = [], []
    stores = [labs.records, own, *other_lab_stores(results_dir, labs)]
    for run_id, rec in records.items():
        found = [existing_record(store, run_id) for store in stores]  # each file read once
        for store, doc in zip(stores, found):
            if doc is not None and doc != rec:
                raise ImportRefused(f"records/{run_id}.json: run {run_id} is already here with different content "
                                    f"({store.path_for(run_id)})")
        in_lab, in_own = found[0], found[1]
        if in_lab is not None and run_id in ledger["runs"]:
            already.append(run_id)
        elif in_own is not None:
            already.append(run_id)  # this lab's own run, come back through another lab's bundle: nothing to add
        else:
            new.append(run_id)
    return new, already
