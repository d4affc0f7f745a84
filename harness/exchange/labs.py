"""Where other labs' results live here: RESULTS/labs/LAB/ for bundles whose signature verified with the
lab's trusted key, RESULTS/labs-unsigned/LAB/ for those taken with --allow-unsigned. Apart from this lab's
runs, and apart from each other, so that an unsigned bundle cannot touch a trusted lab's files.

    runs/RUN_ID.json + index.sqlite   the imported records (a ResultStore of their own)
    sources/SHA256.py                 the train.py each ran
    models/RUN_ID/                    their exported models, when the bundle had them
    baselines.json                    that lab's class baselines, as its last bundle carried them
    imports.json                      the ledger: each bundle taken (when, from where, signed or not) and,
                                      per run, its bundle, signature, comparability and re-score claim
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from harness.atomic import write_json_atomic
from harness.store import RecordError, ResultStore, current_record

LABS = "labs"
UNSIGNED = "labs-unsigned"
LEDGER = "imports.json"


class LedgerError(ValueError):
    """An imports.json that cannot be read; the message names it and what to do."""


@dataclass(frozen=True)
class RunOrigin:
    """How an imported run reached this lab."""
    lab: str
    bundle: str
    signature: str  # verified | unsigned
    incomparable: str | None  # why its fingerprint differs from this lab's (None: comparable)
    claim: dict[str, Any] | None = None  # a local re-score of its model: confirmed | disputed, with numbers


class LabStore:
    def __init__(self, results_dir: Path, lab: str, signed: bool = True):
        self.lab = lab
        self.signed = signed
        self.root = Path(results_dir) / (LABS if signed else UNSIGNED) / lab
        self.records = ResultStore(self.root)
        self.ledger_path = self.root / LEDGER

    @contextmanager
    def lock(self) -> Iterator[None]:
        """One import or claim update of this lab at a time (two would lose each other's ledger entries)."""
        self.root.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.root.parent / f".{self.lab}.lock")):
            yield

    def ledger(self) -> dict[str, Any]:
        if not self.ledger_path.is_file():
            return {"format": 1, "lab": self.lab, "bundles": {}, "runs": {}}
        try:
            doc = json.loads(self.ledger_path.read_bytes())
        except (OSError, ValueError) as e:
            raise LedgerError(f"{self.ledger_path}: unreadable ({e}); move it aside and import the lab's bundles "
                              "again") from None
        if not (isinstance(doc, dict) and isinstance(doc.get("bundles"), dict) and isinstance(doc.get("runs"), dict)):
            raise LedgerError(f"{self.ledger_path}: not an imports ledger; move it aside and import the lab's "
                              "bundles again")
        return doc

    def existing(self, run_id: str) -> dict[str, Any] | None:
        return existing_record(self.records, run_id)

    def record_import(self, ledger: dict[str, Any], bundle_id: str, bundle: dict[str, Any],
                      runs: dict[str, dict[str, Any]]) -> None:
        ledger["bundles"][bundle_id] = bundle
        ledger["runs"].update(runs)
        write_json_atomic(self.ledger_path, ledger)

    def set_claim(self, run_id: str, claim: dict[str, Any]) -> None:
        with self.lock():
            ledger = self.ledger()
            ledger["runs"].setdefault(run_id, {})["claim"] = claim
            write_json_atomic(self.ledger_path, ledger)

    def runs(self) -> dict[str, dict[str, Any]]:
        """The ledger's runs; an unreadable ledger counts as none (the board shows what it can)."""
        try:
            return self.ledger()["runs"]
        except LedgerError:
            return {}

    def source(self, sha256: str) -> Path:
        return self.root / "sources" / f"{sha256}.py"

    def model_dir(self, run_id: str) -> Path:
        return self.root / "models" / run_id


def existing_record(store: ResultStore, run_id: str) -> dict[str, Any] | None:
    """The stored record of run_id (None: there is none); an unreadable file still counts as different."""
    path = store.path_for(run_id)
    if not path.is_file():
        return None
    try:
        return current_record(json.loads(path.read_text()))
    except (ValueError, RecordError):
        return {"unreadable": str(path)}


def lab_stores(results_dir: Path) -> list[LabStore]:
    """Every imported lab here: the signed ones, then the unsigned."""
    out = []
    for signed, folder in ((True, LABS), (False, UNSIGNED)):
        d = Path(results_dir) / folder
        if d.is_dir():
            out += [LabStore(results_dir, p.name, signed) for p in sorted(d.iterdir())
                    if p.is_dir() and not p.name.startswith(".")]
    return out


def find_lab(results_dir: Path, lab: str) -> LabStore | None:
    """The imported lab of that name: its signed store if there is one, else its unsigned one."""
    found = [s for s in lab_stores(results_dir) if s.lab == lab]
    return found[0] if found else None


def lab_names(results_dir: Path) -> list[str]:
    return sorted({s.lab for s in lab_stores(results_dir)})


def other_lab_stores(results_dir: Path, but: LabStore) -> list[ResultStore]:
    return [s.records for s in lab_stores(results_dir) if s.root != but.root]
