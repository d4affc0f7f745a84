"""Where other labs' results live here: RESULTS/labs/LAB/, one folder per lab, apart from this lab's runs.

    runs/RUN_ID.json + index.sqlite   the imported records (a ResultStore of their own)
    sources/SHA256.py                 the train.py each ran
    models/RUN_ID/                    their exported models, when the bundle had them
    baselines.json                    that lab's class baselines, as its last bundle carried them
    imports.json                      the ledger: each bundle taken (when, from where, signed or not) and,
                                      per run, its bundle, signature and comparability
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.atomic import write_json_atomic
from harness.store import RecordError, ResultStore, current_record

LABS = "labs"
LEDGER = "imports.json"


@dataclass(frozen=True)
class RunOrigin:
    """How an imported run reached this lab."""
    lab: str
    bundle: str
    signature: str  # verified | unsigned
    incomparable: str | None  # why its fingerprint differs from this lab's (None: comparable)
    claim: dict[str, Any] | None = None  # a local re-score of its model: confirmed | disputed, with numbers


class LabStore:
    def __init__(self, results_dir: Path, lab: str):
        self.lab = lab
        self.root = Path(results_dir) / LABS / lab
        self.records = ResultStore(self.root)
        self.ledger_path = self.root / LEDGER

    def ledger(self) -> dict[str, Any]:
        if not self.ledger_path.is_file():
            return {"format": 1, "lab": self.lab, "bundles": {}, "runs": {}}
        return json.loads(self.ledger_path.read_text())

    def existing(self, run_id: str) -> dict[str, Any] | None:
        return existing_record(self.records, run_id)

    def record_import(self, bundle_id: str, bundle: dict[str, Any], runs: dict[str, dict[str, Any]]) -> None:
        ledger = self.ledger()
        ledger["bundles"][bundle_id] = bundle
        ledger["runs"].update(runs)
        write_json_atomic(self.ledger_path, ledger)

    def set_claim(self, run_id: str, claim: dict[str, Any]) -> None:
        ledger = self.ledger()
        ledger["runs"].setdefault(run_id, {})["claim"] = claim
        write_json_atomic(self.ledger_path, ledger)

    def origin(self, run_id: str) -> RunOrigin | None:
        entry = self.ledger()["runs"].get(run_id)
        if entry is None:
            return None
        return RunOrigin(self.lab, entry.get("bundle", ""), entry.get("signature", "unsigned"),
                         entry.get("incomparable"), entry.get("claim"))

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


def lab_names(results_dir: Path) -> list[str]:
    d = Path(results_dir) / LABS
    return sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")) if d.is_dir() else []
