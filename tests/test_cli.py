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
