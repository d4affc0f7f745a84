"""The contract (harness/contract.py) against what reads it: fixed/prepare.py, docs/design.md, the README."""

from __future__ import annotations

import re

from harness import contract
from tests.conftest import REPO

DESIGN = (REPO / "docs" / "design.md").read_text()


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    nxt = text.find("\n## ", start + len(heading))
    return text[start: nxt if nxt != -1 else len(text)]


def test_design_md_lists_exactly_the_run_environment():
    table = _section(DESIGN, "## The environment contract")
    listed = re.findall(r"^\| `(HARNESS_[A-Z_]+)` \|", table, flags=re.M)
    assert sorted(listed) == sorted(contract.RUN_ENV), "docs/design.md's environment table differs from harness/contract.py"


def test_fixed_prepare_reads_only_contract_variables():
    text = (REPO / "fixed" / "prepare.py").read_text()
    read = set(re.findall(r"HARNESS_[A-Z_]+", text))
    assert read == set(contract.RUN_ENV), f"fixed/prepare.py reads {sorted(read ^ set(contract.RUN_ENV))} " \
                                          "differently from harness/contract.py"


def test_design_md_lists_the_run_folder_files():
    table = _section(DESIGN, "## A run folder")
    listed = re.findall(r"^\| `([^`]+)` \|", table, flags=re.M)
    assert sorted(listed) == sorted(contract.RUN_FILES), "docs/design.md's run-folder table differs from harness/contract.py"


def test_readme_states_the_exit_codes():
    readme = (REPO / "README.md").read_text()
    for code in contract.EXIT_CODES:
        assert f"{code} " in readme[readme.index("Exit codes:"):][:400], f"README.md does not state exit code {code}"


def _layout_paths(text: str) -> set[str]:
    table = _section(text, "## Layout")
    return set(re.findall(r"`((?:harness|fixed|submissions|images|tests)/[^`]*|[A-Za-z.][\w.-]*\.(?:md|yaml|cuda))`",
                          table))


def test_the_layout_tables_match_the_tree():
    """Every path a Layout table names exists, and every module and folder of harness/ has a row."""
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "harness").rglob("*.py")}
    for doc in ("README.md", "docs/design.md"):
        listed = _layout_paths((REPO / doc).read_text())
        missing = sorted(p for p in listed if "/" in p and "*" not in p and not (REPO / p.rstrip("/")).exists())
        assert not missing, f"{doc}'s Layout table names paths that do not exist: {missing}"
        folders = {p for p in listed if p.endswith("/")}
        uncovered = sorted(m for m in modules
                           if m not in listed and not any(m.startswith(f) for f in folders))
        assert not uncovered, f"{doc}'s Layout table has no row for: {uncovered}"
