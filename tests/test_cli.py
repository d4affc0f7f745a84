"""The CLI's small commands: exit codes and output that scripts and CI rely on."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from harness.cli import app
from tests.conftest import REPO

runner = CliRunner()


def test_validate_exit_codes_and_lines(tmp_path):
    good = REPO / "submissions" / "baseline" / "train.py"
    assert runner.invoke(app, ["validate", str(good)]).exit_code == 0
    syntax = tmp_path / "syntax.py"
    syntax.write_text("import torch\n\ndef f(:\n    pass\n")
    out = runner.invoke(app, ["validate", str(syntax)])
    assert out.exit_code == 1 and f"{syntax}:3:" in out.output and "syntax" in out.output
    blob = tmp_path / "blob.py"
    blob.write_bytes(b"\x7fELF\x00\x01\x02" * 100)
    out = runner.invoke(app, ["validate", str(blob)])
    assert out.exit_code == 1 and "binary" in out.output
    forbidden = tmp_path / "forbidden.py"
    forbidden.write_text("import torch\nimport requests\n")
    out = runner.invoke(app, ["validate", str(forbidden), "--json"])
    assert out.exit_code == 1
    doc = json.loads(out.stdout)
    assert [(f["line"], f["code"]) for f in doc["findings"] if f["severity"] == "error"][0] == (2, "forbidden-import")
    missing = runner.invoke(app, ["validate", str(tmp_path / "nope.py")])
    assert missing.exit_code == 2 and "nope.py" in missing.output
    assert runner.invoke(app, ["validate", str(good), "-b", "huge"]).exit_code == 2


def test_benchmarks_listing():
    out = runner.invoke(app, ["benchmarks", "--json"])
    names = {b["name"]: b for b in json.loads(out.stdout)}
    assert names["tiny"]["time_budget_s"] == 60 and names["climbmix"]["seq_len"] == 2048


def test_prepare_json_reuses_the_cache(tiny_cache, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tiny_cache.data_dir.parent))
    out = runner.invoke(app, ["prepare", "-b", "tiny", "--json"])
    assert out.exit_code == 0
    assert json.loads(out.stdout)["manifest_sha256"] == tiny_cache.manifest_sha256


def test_hw_on_this_machine_is_honest():
    out = runner.invoke(app, ["hw", "--json"])
    doc = json.loads(out.stdout)
    assert out.exit_code == 0 and doc["class"]["label"]
    if not doc["profile"]["gpus"]:  # a CPU-only machine: a CPU class, no assumed peak
        assert doc["class"]["kind"] == "cpu" and doc["peak_flops_for_runs"] == "unknown"
        assert "NVML not available" in doc["nvml"]


def test_doctor_reports_every_check_with_fixes():
    out = runner.invoke(app, ["doctor", "--json"])
    checks = json.loads(out.stdout)
    names = {c["name"] for c in checks}
    assert {"docker", "nvml", "gpus"} <= names and any(n.startswith("benchmark tiny") for n in names)
    for c in checks:
        assert c["ok"] or c["fix"], c
    assert out.exit_code == (0 if all(c["ok"] or not c["required"] for c in checks) else 1)


def test_help_everywhere():
    for cmd in ([], ["run"], ["submit"], ["results"], ["results", "list"], ["image"], ["image", "build"], ["hw"]):
        out = runner.invoke(app, [*cmd, "--help"])
        assert out.exit_code == 0 and "Usage" in out.output


# --- nothing a record or a candidate controls reaches the terminal raw ----------------------------

EVIL = "ok\x1b[2J\x1b]0;pwned\x07\rkeep\u202eesrever\u202c\u2066x\u2069\x08\x7f\x9b31m\x00\ttab\nline\u200b"


def _assert_inert(text: str) -> None:
    import unicodedata

    bad = [hex(ord(c)) for c in text if c != "\n" and unicodedata.category(c) in ("Cc", "Cf")]
    assert not bad, bad
    assert "pwned" not in text  # the OSC payload (a window title) is not text to show


def test_listings_and_score_cards_of_a_hostile_record_are_inert(tmp_path):
    from harness.store import ResultStore
    from tests.test_store import make_record

    results = tmp_path / "results"
    store = ResultStore(results)
    ok = make_record(0.99, description=EVIL, gpu_class="CPU-x" + EVIL)
    crashed = make_record(status="crash", description=EVIL, gpu_class="CPU-x", reason=EVIL,
                          traceback_tail="Traceback (most recent call last):\n" + EVIL + "\nValueError: " + EVIL)
    store.put(ok)
    store.put(crashed)
    for args in (["results", "list", "--all"], ["leaderboard", "--all"], ["leaderboard", "--all", "--by", "gpu-class"],
                 ["results", "show", ok["run_id"]], ["results", "show", crashed["run_id"]]):
        out = runner.invoke(app, [*args, "--results", str(results)])
        assert out.exit_code == 0, out.output
        _assert_inert(out.output)
        assert "esrever" in out.output or args[:2] == ["results", "show"], args  # the text itself still shows
    card = runner.invoke(app, ["results", "show", crashed["run_id"], "--results", str(results)]).output
    assert "status crash · ok keepesreverx tab line · trust self-reported" in card  # one line: no forged lines
    # --json keeps the exact strings, escaped by JSON itself: still nothing raw on the terminal
    out = runner.invoke(app, ["results", "list", "--all", "--json", "--results", str(results)])
    assert "\x1b" not in out.stdout and "\u202e" not in out.stdout and "\r" not in out.stdout
    assert {r["description"] for r in json.loads(out.stdout)["rows"]} == {EVIL}


def test_validate_output_with_a_hostile_file_name_is_inert(tmp_path):
    hostile = tmp_path / "tr\x1b[2Jain\u202e\rkeep.py"
    hostile.write_text("import torch\nimport wandb\n")
    out = runner.invoke(app, ["validate", str(hostile)])
    assert out.exit_code == 1 and "error forbidden-import" in out.output
    _assert_inert(out.output)
    missing = runner.invoke(app, ["validate", str(tmp_path / "no\x1b]0;pwned\x07pe[/x].py")])
    assert missing.exit_code == 2 and "pe[/x].py" in missing.output  # no rich markup error either
    _assert_inert(missing.output)
