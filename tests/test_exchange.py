"""Comparing results across labs: fingerprints, lab keys, signed bundles, import, the cross-lab leaderboard.

Two labs ("north" and "south") are two result stores, two config directories and two key pairs on this
machine; each makes one real verified run of the toy on tiny in containers (a 2 s budget, set in their
benchmarks.yaml so that it is the benchmark's own). They share one prepared tiny cache: tiny's val split
is drawn from a secret seed at prepare time, so only labs that share a cache share a fingerprint.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from docker_support import docker_client  # noqa: E402,F401

from harness.cli import app  # noqa: E402
from tests.conftest import REPO  # noqa: E402

TOY = REPO / "tests" / "cases" / "toy_train.py"
runner = CliRunner()


def _yaml(path: Path, budget: float) -> Path:
    doc = yaml.safe_load((REPO / "benchmarks.yaml").read_text())
    doc["benchmarks"]["tiny"]["time_budget_s"] = budget
    path.write_text(yaml.safe_dump(doc))
    return path


def lab_env(root: Path, lab: str, budget: float = 2) -> dict[str, str]:
    home = root / lab
    home.mkdir(parents=True, exist_ok=True)
    bench = home / "benchmarks.yaml"
    if not bench.exists():
        _yaml(bench, budget)
    return {"HARNESS_CONFIG_DIR": str(home / "config"), "HARNESS_RESULTS": str(home / "results"),
            "HARNESS_RUNS_DIR": str(home / "runs"), "HARNESS_BASELINES": str(home / "results" / "baselines.json"),
            "HARNESS_BENCHMARKS": str(bench)}


def invoke(env: dict[str, str], *args: str):
    return runner.invoke(app, [str(a) for a in args], env=env)


def ok_json(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def tree(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()} \
        if path.exists() else {}


# --- the fingerprint (no runs) ----------------------------------------------------------------------------

def test_the_fingerprint_changes_with_what_makes_scores_comparable(tiny_bench, tiny_cache):
    from dataclasses import replace

    from harness.fingerprint import benchmark_fingerprint, fingerprint_parts
    from harness.fixedcode import fixed_hashes

    manifest, fixed = tiny_cache.manifest, fixed_hashes()
    fp = benchmark_fingerprint(tiny_bench, manifest, fixed)
    assert fp == benchmark_fingerprint(tiny_bench, json.loads(json.dumps(manifest)), dict(fixed))  # same inputs
    assert fp != benchmark_fingerprint(tiny_bench, manifest, fixed, budget_s=30)  # a run at another budget
    assert fp != benchmark_fingerprint(replace(tiny_bench, time_budget_s=30), manifest, fixed)
    assert fp != benchmark_fingerprint(replace(tiny_bench, eval_tokens=65536), manifest, fixed)
    assert fp != benchmark_fingerprint(tiny_bench, manifest, {**fixed, "evaluate.py": "0" * 64})
    val = json.loads(json.dumps(manifest))
    val["files"]["val/00000.bin"]["sha256"] = "1" * 64
    assert fp != benchmark_fingerprint(tiny_bench, val, fixed)  # the val shard is in it
    # What does not bear on a score is not in it.
    assert fp == benchmark_fingerprint(replace(tiny_bench, description="edited", runtime="runsc"), manifest, fixed)
    assert set(fingerprint_parts(tiny_bench, manifest, fixed)["fixed"]) == set(fixed)


def test_benchmarks_json_prints_the_local_fingerprint(tiny_cache, monkeypatch):
    from harness.benchmarks import get_benchmark
    from harness.fingerprint import local_fingerprint

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tiny_cache.data_dir.parent))
    docs = {d["name"]: d for d in ok_json(invoke({}, "benchmarks", "--json"))}
    assert docs["tiny"]["fingerprint"] == local_fingerprint(get_benchmark("tiny"))
    assert docs["tiny"]["fingerprint"].startswith("bfp1:")


# --- keys (no runs) ------------------------------------------------------------------------------------------

def test_keys_are_owner_only_and_show_a_trusted_keys_line(tmp_path):
    from harness.exchange.keys import config_dir, load_trusted

    assert config_dir({"XDG_CONFIG_HOME": "/x"}) == Path("/x/harness")
    assert config_dir({"HOME": "/h"}) == Path.home() / ".config" / "harness"
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "HARNESS_CONFIG_DIR": ""}
    made = ok_json(invoke(env, "keys", "init", "--lab", "north", "--json"))
    d = tmp_path / "xdg" / "harness"
    assert Path(made["config_dir"]) == d
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for name in ("lab.key", "lab.pub", "trusted_keys"):
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o600, name
    line = invoke(env, "keys", "show").stdout.strip()
    assert line.startswith("north ssh-ed25519 AAAA") and line.split()[1:] == made["public_key"].split()
    assert [t.lab for t in load_trusted(d / "trusted_keys")] == ["north"]  # a lab trusts its own key
    again = invoke(env, "keys", "init", "--lab", "north")
    assert again.exit_code == 2 and "--force" in again.output
    assert invoke(env, "keys", "init", "--lab", "bad name").exit_code == 2
    (d / "trusted_keys").write_text("north ssh-ed25519 not-base64\n")
    with pytest.raises(ValueError, match=r"trusted_keys:1"):
        load_trusted(d / "trusted_keys")


# --- two labs, real verified runs ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def labs(tmp_path_factory, tiny_cache, docker_client):  # noqa: F811
    """north and south: keys, mutual trust, one verified container run each; east: a lab with a 3 s budget."""
    from harness.benchmarks import get_benchmark
    from harness.submit import SubmitOptions, submit

    root = tmp_path_factory.mktemp("labs")
    envs = {lab: {**lab_env(root, lab, 3 if lab == "east" else 2),
                  "HARNESS_CACHE_DIR": str(tiny_cache.data_dir.parent)} for lab in ("north", "south", "east")}
    lines = {lab: ok_json(invoke(env, "keys", "init", "--lab", lab, "--json")) for lab, env in envs.items()}
    for lab, env in envs.items():
        with open(Path(env["HARNESS_CONFIG_DIR"]) / "trusted_keys", "a") as f:
            for other, made in lines.items():
                if other != lab:
                    f.write(f"{other} {made['public_key']}\n")
    mp = pytest.MonkeyPatch()
    try:
        for lab in ("north", "south"):
            for k, v in envs[lab].items():
                mp.setenv(k, v)
            bench = get_benchmark("tiny")
            report = submit(TOY, SubmitOptions(benchmark=bench, backend="docker", seeds=1, calibrate=False,
                                               description=f"toy at {lab}", tsv=False,
                                               results_dir=Path(envs[lab]["HARNESS_RESULTS"])))
            r = report.results[0]
            assert r.status == "ok" and r.trust == "verified", r.reason
    finally:
        mp.undo()
    return root, envs


@pytest.fixture(scope="module")
def north_bundle(labs):
    root, envs = labs
    out = root / "north-bundle.tar.gz"
    doc = ok_json(invoke(envs["north"], "export", "-o", out, "--with-models", "--json"))
    assert doc["lab"] == "north" and len(doc["runs"]) == 1 and doc["models"] == 1
    return out, doc


@pytest.mark.docker
def test_a_bundle_goes_from_one_lab_to_another_and_both_are_on_one_board(labs, north_bundle):
    root, envs = labs
    bundle, exported = north_bundle
    south = envs["south"]
    first = ok_json(invoke(south, "import", bundle, "--json"))
    assert first["lab"] == "north" and first["signature"] == "verified"
    assert first["added"] == exported["runs"] and first["incomparable"] == {}
    stored = Path(south["HARNESS_RESULTS"]) / "labs" / "north" / "runs" / f"{exported['runs'][0]}.json"
    assert json.loads(stored.read_text())["trust"] == "verified"
    # Imported runs are north's, not south's: south's own listing and leaderboard do not have them.
    own = ok_json(invoke(south, "results", "list", "--json"))
    assert exported["runs"][0] not in {r["run_id"] for r in own["rows"]}
    before = tree(Path(south["HARNESS_RESULTS"]))
    again = ok_json(invoke(south, "import", bundle, "--json"))
    assert again["added"] == [] and again["already"] == exported["runs"]
    assert tree(Path(south["HARNESS_RESULTS"])) == before  # importing twice adds nothing
    board = ok_json(invoke(south, "leaderboard", "--labs", "all", "--by", "gpu-class", "--json"))
    rows = {r["lab"]: r for r in board["rows"]}
    assert set(rows) == {"north", "south"}
    assert rows["north"]["trust"] == "verified" and rows["north"]["comparable"] and rows["north"]["n"] == 1
    assert rows["north"]["submission_sha256"] == rows["south"]["submission_sha256"]  # the same toy, two labs
    assert rows["north"]["fingerprint"] == board["fingerprint"] == rows["south"]["fingerprint"]
    text = invoke(south, "leaderboard", "--labs", "all").stdout
    assert "north" in text and "south" in text and "verified" in text
    # A lab's own bundle is not imported back.
    mine = invoke(envs["north"], "import", bundle)
    assert mine.exit_code == 1 and "this lab's own" in mine.output


def _unpacked(labs, name: str) -> Path:
    root, envs = labs
    d = root / name
    if not d.exists():
        ok_json(invoke(envs["north"], "export", "-o", d, "--json"))
    return d


def _copy(src: Path, dst: Path) -> Path:
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    return dst


def _flip(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert old in data, (path, old)
    path.write_bytes(data.replace(old, new, 1))


@pytest.mark.docker
def test_a_changed_or_untrusted_bundle_is_refused_and_changes_nothing(labs, tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from harness.exchange.keys import public_openssh

    root, envs = labs
    clean = _unpacked(labs, "north-dir")
    east = envs["east"]  # a lab that has imported nothing yet
    results = Path(east["HARNESS_RESULTS"])
    before = tree(results)
    run_id = json.loads((clean / "manifest.json").read_text())["runs"][0]
    source = next((clean / "sources").iterdir()).name

    def record(d):
        _flip(d / "records" / f"{run_id}.json", b'"val_bpb": ', b'"val_bpb": 0')  # 2.9 -> 02.9: one byte more

    def train_py(d):
        _flip(d / "sources" / source, b"lr=", b"lR=")

    def manifest(d):
        _flip(d / "manifest.json", b'"lab": "north"', b'"lab": "nortH"')

    def untrusted(d):  # re-signed by a key that claims to be north's
        key = Ed25519PrivateKey.generate()
        sig = json.loads((d / "manifest.sig").read_text())
        sig["public_key"] = public_openssh(key.public_key())
        sig["signature"] = base64.b64encode(key.sign((d / "manifest.json").read_bytes())).decode()
        (d / "manifest.sig").write_text(json.dumps(sig))

    def unlisted(d):
        (d / "sources" / "extra.py").write_text("print('hi')\n")

    cases = {"record": (record, f"records/{run_id}.json"), "train.py": (train_py, f"sources/{source}"),
             "manifest": (manifest, "manifest.sig"), "untrusted key": (untrusted, "not the trusted key of lab 'north'"),
             "unlisted file": (unlisted, "sources/extra.py: in the bundle but not in the manifest")}
    for name, (change, named) in cases.items():
        d = _copy(clean, tmp_path / name.replace(" ", "-"))
        change(d)
        out = invoke(east, "import", d)
        assert out.exit_code == 1, (name, out.output)
        assert "refused, nothing imported" in out.output and named in out.output, (name, out.output)
        assert tree(results) == before, name
    # The untouched copy is accepted by the same lab.
    assert ok_json(invoke(east, "import", _copy(clean, tmp_path / "untouched"), "--json"))["added"] == [run_id]


@pytest.mark.docker
def test_another_budget_is_incomparable_and_kept_off_the_board(labs, north_bundle):
    root, envs = labs
    bundle, exported = north_bundle
    east = envs["east"]  # tiny at 3 s: north's 2 s runs are another benchmark
    doc = ok_json(invoke(east, "import", bundle, "--json"))
    run_id = exported["runs"][0]
    assert run_id in doc["incomparable"] or run_id in doc["already"]
    board = ok_json(invoke(east, "leaderboard", "--labs", "all", "--json"))
    assert all(r["lab"] != "north" for r in board["rows"])
    shown = ok_json(invoke(east, "leaderboard", "--labs", "all", "--incomparable", "--json"))
    north = [r for r in shown["rows"] if r["lab"] == "north"]
    assert north and not north[0]["comparable"] and north[0]["fingerprint"] != shown["fingerprint"]


@pytest.mark.docker
def test_unsigned_bundles_need_a_flag_and_say_so(labs, tmp_path):
    root, envs = labs
    d = _copy(_unpacked(labs, "north-dir"), tmp_path / "unsigned")
    (d / "manifest.sig").unlink()
    west = lab_env(tmp_path, "west")
    west["HARNESS_CACHE_DIR"] = envs["north"]["HARNESS_CACHE_DIR"]
    refused = invoke(west, "import", d, "--trusted-keys", Path(envs["south"]["HARNESS_CONFIG_DIR"]) / "trusted_keys")
    assert refused.exit_code == 1 and "manifest.sig: missing" in refused.output
    doc = ok_json(invoke(west, "import", d, "--allow-unsigned", "--json"))
    assert doc["signature"] == "unsigned" and len(doc["added"]) == 1
    board = ok_json(invoke(west, "leaderboard", "--labs", "all", "--json"))
    assert [r["trust"] for r in board["rows"] if r["lab"] == "north"] == ["unsigned"]


@pytest.mark.docker
def test_a_run_id_here_with_other_content_is_refused_by_name(labs, tmp_path):
    root, envs = labs
    clean = _unpacked(labs, "north-dir")
    run_id = json.loads((clean / "manifest.json").read_text())["runs"][0]
    south = envs["south"]
    invoke(south, "import", clean)  # present (or already) in south's store
    # north edits its record (a new description) and exports again: a valid, signed bundle
    north_rec = Path(envs["north"]["HARNESS_RESULTS"]) / "runs" / f"{run_id}.json"
    saved = north_rec.read_bytes()
    try:
        doc = json.loads(saved)
        doc["provenance"]["submission"]["description"] = "renamed after the fact"
        north_rec.write_text(json.dumps(doc))
        edited = root / "north-edited"
        shutil.rmtree(edited, ignore_errors=True)
        ok_json(invoke(envs["north"], "export", "-o", edited, "--json"))
    finally:
        north_rec.write_bytes(saved)
        os.utime(north_rec)
    out = invoke(south, "import", edited)
    assert out.exit_code == 1 and f"run {run_id} is already here with different content" in out.output


@pytest.mark.docker
def test_sync_through_a_bare_git_repository_moves_bundles_both_ways(labs, tmp_path):
    root, envs = labs
    bare = tmp_path / "exchange.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    n1 = ok_json(invoke(envs["north"], "sync", bare, "--json"))
    assert n1["pushed"].startswith("bundles/north/") and len(n1["pushed_runs"]) == 1 and n1["imported"] == {}
    s1 = ok_json(invoke(envs["south"], "sync", bare, "--json"))
    assert s1["pushed"].startswith("bundles/south/") and len(s1["pushed_runs"]) == 1
    (got,) = s1["imported"].values()
    assert got["lab"] == "north" and got["signature"] == "verified"
    assert sorted(got["added"] + got["already"]) == n1["pushed_runs"]  # south may have imported it before
    n2 = ok_json(invoke(envs["north"], "sync", bare, "--json"))
    assert n2["pushed"] is None  # nothing new at north
    (back,) = n2["imported"].values()
    assert back["lab"] == "south" and back["added"] == s1["pushed_runs"]
    n3 = ok_json(invoke(envs["north"], "sync", bare, "--json"))
    assert n3["pushed"] is None and all(not r["added"] for r in n3["imported"].values())  # idempotent
    files = subprocess.run(["git", "-C", str(bare), "ls-tree", "-r", "--name-only", "HEAD"], check=True,
                           capture_output=True, text=True).stdout.split()
    assert sorted(f.split("/")[1] for f in files) == ["north", "south"]
    board = ok_json(invoke(envs["north"], "leaderboard", "--labs", "all", "--json"))
    assert {r["lab"] for r in board["rows"]} == {"north", "south"}


@pytest.mark.docker
def test_an_honest_model_is_confirmed_and_an_edited_claim_is_disputed(labs, north_bundle, tmp_path):
    root, envs = labs
    bundle, exported = north_bundle
    run_id = exported["runs"][0]
    south = envs["south"]
    invoke(south, "import", bundle)  # (or already imported)
    doc = ok_json(invoke(south, "rescore-claims", "north", "--json"))
    (claim,) = doc["claims"]
    assert claim["run_id"] == run_id and claim["status"] == "confirmed", claim
    assert abs(claim["local"] - claim["claimed"]) <= claim["tolerance"]
    board = ok_json(invoke(south, "leaderboard", "--labs", "all", "--json"))
    assert [r["trust"] for r in board["rows"] if r["lab"] == "north"] == ["confirmed"]
    # north claims a better score than its model has, edits its record and signs a new bundle: the bundle
    # passes every check of import (it is north's, signed), and the re-score here disputes the number.
    north_rec = Path(envs["north"]["HARNESS_RESULTS"]) / "runs" / f"{run_id}.json"
    saved = north_rec.read_bytes()
    try:
        doc = json.loads(saved)
        true_bpb = doc["metrics"]["val_bpb"]
        doc["metrics"]["val_bpb"] = true_bpb - 0.5
        doc["evaluation"]["evaluator"]["val_bpb"] = true_bpb - 0.5
        doc["provenance"]["benchmark"]["entropy_floor_bpb"] = 0.0  # so that a leak would pass its own floor
        north_rec.write_text(json.dumps(doc))
        edited = tmp_path / "edited.tar.gz"
        ok_json(invoke(envs["north"], "export", "-o", edited, "--with-models", "--json"))
    finally:
        north_rec.write_bytes(saved)
        os.utime(north_rec)
    west = {**lab_env(tmp_path, "west"), "HARNESS_CACHE_DIR": envs["north"]["HARNESS_CACHE_DIR"]}
    trusted = Path(envs["south"]["HARNESS_CONFIG_DIR"]) / "trusted_keys"
    import harness.pipeline.judge as judge

    floors, real_check = [], judge.check_floor

    def spy(outcome, floor):
        floors.append(floor)
        return real_check(outcome, floor)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(judge, "check_floor", spy)
        out = invoke(west, "rescore-claims", edited, "--trusted-keys", trusted, "--json")
    assert out.exit_code == 1, out.output
    # The re-score here judged the model against this lab's floor of its own val data, not the claimed 0.0.
    from harness.data import cache_info
    from harness.benchmarks import get_benchmark

    local_floor = cache_info(get_benchmark("tiny"), Path(west["HARNESS_CACHE_DIR"]) / "tiny").stats["entropy_floor_bpb"]
    assert floors == [local_floor] and local_floor > 1.0
    (claim,) = json.loads(out.stdout)["claims"]
    assert claim["status"] == "disputed" and claim["claimed"] == pytest.approx(true_bpb - 0.5)
    assert claim["local"] == pytest.approx(true_bpb, abs=claim["tolerance"]) and "claimed" in claim["reason"]
    board = ok_json(invoke(west, "leaderboard", "--labs", "all", "--json"))
    assert [r["trust"] for r in board["rows"] if r["lab"] == "north"] == ["disputed"]


# --- the board's cross-class view (no runs) -------------------------------------------------------------------

def _row(lab, cls, sha, mean, relative=None, z=None, comparable=True):
    from harness.exchange.board import LabRow

    return LabRow(lab=lab, gpu_class=cls, submission_sha256=sha, description="", n=2, mean_bpb=mean, std_bpb=0.01,
                  best_bpb=mean, delta=None, z=z, relative=relative, trust="verified", fingerprint="bfp1:x",
                  run_id=f"{lab}-{cls}", comparable=comparable)


def test_the_cross_class_view_ranks_by_improvement_and_gives_class_ratios():
    from harness.exchange.board import by_improvement, with_class_ratios

    rows = with_class_ratios([
        _row("north", "H100-SXM-80GB", "aaa", 0.95, relative=-0.02, z=-8.0),
        _row("south", "A100-SXM-40GB", "aaa", 1.045, relative=-0.05, z=-4.0),  # worse bpb, bigger gain
        _row("south", "A100-SXM-40GB", "bbb", 1.10, relative=+0.01, z=+1.0),
        _row("east", "L4-24GB", "ccc", 1.30),  # no baseline for its class
        _row("west", "H100-SXM-80GB", "aaa", 0.90, relative=-0.5, comparable=False),
    ])
    ranked = by_improvement(rows)
    assert [r.lab + "/" + r.submission_sha256 for r in ranked] == ["south/aaa", "north/aaa", "south/bbb", "east/ccc",
                                                                   "west/aaa"]
    ratio = {(r.lab, r.submission_sha256): r.class_ratio for r in rows}
    assert ratio[("north", "aaa")] == 1.0 and ratio[("south", "aaa")] == pytest.approx(1.045 / 0.95)
    assert ratio[("south", "bbb")] is None and ratio[("west", "aaa")] is None  # one class; incomparable


def test_energy_comes_from_the_records_telemetry(tmp_path):
    from harness.exchange.board import _energy

    rec = tmp_path / "r.json"
    rec.write_text(json.dumps({"telemetry": {"summary": {"energy_j": 51234.5, "energy_source": "counter"}}}))
    assert _energy(rec) == 51234.5
    rec.write_text(json.dumps({"telemetry": {"summary": None, "unavailable": "no GPU"}}))
    assert _energy(rec) is None


def _unsigned(d: Path) -> Path:
    """The bundle's manifest rewritten to match its files as they are now, and its signature dropped."""
    import hashlib

    manifest = json.loads((d / "manifest.json").read_text())
    manifest["files"] = {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                         for p in sorted(d.rglob("*")) if p.is_file() and p.name not in ("manifest.json", "manifest.sig")}
    (d / "manifest.json").write_text(json.dumps(manifest))
    (d / "manifest.sig").unlink(missing_ok=True)
    return d


@pytest.mark.docker
def test_what_a_hostile_bundle_tries_is_refused(labs, tmp_path):
    import tarfile

    root, envs = labs
    clean = _unpacked(labs, "north-dir")
    source = next((clean / "sources").iterdir()).name
    nobody = {**lab_env(tmp_path, "nobody"), "HARNESS_CACHE_DIR": envs["north"]["HARNESS_CACHE_DIR"]}
    results = Path(nobody["HARNESS_RESULTS"])

    def refused(bundle, named, *extra, env=nobody):
        before = tree(results)
        out = invoke(env, "import", bundle, "--allow-unsigned", *extra)
        assert out.exit_code == 1 and "refused, nothing imported" in out.output and named in out.output, out.output
        assert tree(results) == before

    # An unsigned bundle in the name of a lab whose key is trusted: refused, never filed under that lab.
    south_trusted = Path(envs["south"]["HARNESS_CONFIG_DIR"]) / "trusted_keys"
    refused(_unsigned(_copy(clean, tmp_path / "as-north")), "must carry its signature", "--trusted-keys", south_trusted)
    # A source whose name is not its hash (another file planted under a known name).
    d = _copy(clean, tmp_path / "renamed")
    (d / "sources" / source).rename(d / "sources" / ("0" * 64 + ".py"))
    refused(_unsigned(d), "not its name")
    # A model for a run the bundle does not carry (say, another lab's run), and a file outside the layout.
    d = _copy(clean, tmp_path / "foreign-model")
    (d / "models" / "20250101-000000-abcdef").mkdir(parents=True)
    (d / "models" / "20250101-000000-abcdef" / "model.pt2").write_bytes(b"x")
    refused(_unsigned(d), "models/20250101-000000-abcdef/model.pt2: not a bundle file")
    d = _copy(clean, tmp_path / "extra")
    (d / "runs").mkdir()
    (d / "runs" / "x.json").write_text("{}")
    refused(_unsigned(d), "runs/x.json: not a bundle file")
    # Links and FIFOs in a directory bundle are refused, not followed (and a FIFO does not hang the import).
    d = _copy(clean, tmp_path / "link")
    (d / "baselines.json").unlink(missing_ok=True)
    (d / "baselines.json").symlink_to("/etc/passwd")
    refused(d, "baselines.json")
    d = _copy(clean, tmp_path / "fifo")
    os.mkfifo(d / "sources" / "pipe.py")
    refused(d, "not a regular file")
    # A tar member that climbs out, or a bomb of a size: refused by name and by size, before unpacking.
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(clean / "manifest.json", arcname="../manifest.json")
    refused(evil, "not a bundle file name")
    # A ledger that is not one stops the import before anything is written, naming the file.
    south = envs["south"]
    ledger = Path(south["HARNESS_RESULTS"]) / "labs" / "north" / "imports.json"
    if ledger.exists():
        saved = ledger.read_bytes()
        ledger.write_text("[]")
        try:
            out = invoke(south, "import", _copy(clean, tmp_path / "again"))
            assert out.exit_code == 1 and "imports.json" in out.output, out.output
        finally:
            ledger.write_bytes(saved)


@pytest.mark.docker
def test_an_import_cut_short_is_completed_by_the_next(labs, tmp_path, monkeypatch):
    import harness.exchange.labs as labs_mod

    root, envs = labs
    clean = _unpacked(labs, "north-dir")
    env = {**lab_env(tmp_path, "later"), "HARNESS_CACHE_DIR": envs["north"]["HARNESS_CACHE_DIR"]}
    trusted = Path(envs["south"]["HARNESS_CONFIG_DIR"]) / "trusted_keys"

    def crash(*_a, **_k):
        raise KeyboardInterrupt  # the records are written, the ledger is not

    with monkeypatch.context() as m:
        m.setattr(labs_mod.LabStore, "record_import", crash)
        with pytest.raises(KeyboardInterrupt):
            from harness.exchange.importer import import_bundle
            from harness.exchange.keys import load_trusted

            import_bundle(clean, Path(env["HARNESS_RESULTS"]), load_trusted(trusted))
    doc = ok_json(invoke(env, "import", clean, "--trusted-keys", trusted, "--json"))
    assert doc["added"] == json.loads((clean / "manifest.json").read_text())["runs"]  # written again, now ledgered
    board = ok_json(invoke(env, "leaderboard", "--labs", "all", "--json"))
    assert [r["lab"] for r in board["rows"]] == ["north"]


# --- reproducing an imported submission here ------------------------------------------------------------------

def test_reproduction_compares_normalized_deltas_with_welch():
    from harness.exchange.reproduce import Side, compare

    def side(lab, cls, values, base):
        return Side(lab, cls, [f"{lab}{i}" for i in range(len(values))], values, base,
                    [v - base for v in values] if base is not None else [])

    # Two classes, each against its own baseline: the deltas are compared, not the raw scores.
    claimed = side("north", "H100-SXM-80GB", [0.950, 0.952, 0.948], 0.990)  # Δ about -0.040
    local = side("local", "A100-SXM-40GB", [1.061, 1.059, 1.060], 1.100)  # Δ about -0.040 as well
    rep = compare(claimed, local, "sha")
    assert rep.compared == "normalized delta" and rep.welch["p_two_sided"] > 0.5  # the same improvement
    worse = side("local", "A100-SXM-40GB", [1.091, 1.089, 1.090], 1.100)  # Δ -0.010: not reproduced
    rep = compare(claimed, worse, "sha")
    assert rep.welch["delta"] == pytest.approx(0.030, abs=1e-9) and rep.welch["p_two_sided"] < 0.01
    # One class, no baselines: the raw scores compare directly; across classes without them, nothing does.
    assert compare(side("north", "X", [1.0, 1.01], None), side("local", "X", [1.0, 1.02], None), "s").compared \
        == "val_bpb (same class)"
    nothing = compare(side("north", "X", [1.0, 1.01], None), side("local", "Y", [1.0, 1.02], 1.1), "s")
    assert nothing.welch is None and "north's X" in nothing.note
    few = compare(side("north", "X", [1.0], None), side("local", "X", [1.0, 1.02], None), "s")
    assert few.welch is None and "2+ runs a side" in few.note


@pytest.mark.docker
def test_reproduce_trains_an_imported_submission_here(labs, north_bundle):
    root, envs = labs
    bundle, exported = north_bundle
    south = envs["south"]
    invoke(south, "import", bundle)  # (or already imported)
    run_id = exported["runs"][0]
    doc = ok_json(invoke(south, "reproduce", run_id[:15], "--seeds", "1", "--backend", "local", "--no-calibrate",
                         "--json"))
    assert doc["claimed"]["lab"] == "north" and doc["claimed"]["run_ids"] == [run_id]
    assert doc["local"]["n"] == 1 and len(doc["records"]) == 1
    assert doc["compared"] == "val_bpb (same class)" and doc["welch"] is None and "2+ runs" in doc["note"]
    local = json.loads((Path(south["HARNESS_RESULTS"]) / "runs" / f"{doc['records'][0]}.json").read_text())
    assert local["provenance"]["submission"]["sha256"] == doc["submission_sha256"]
    assert local["provenance"]["submission"]["description"] == f"reproduce north:{run_id}"
    assert local["decision"] is None  # a reproduction is never a keep/discard decision of this lab
    missing = invoke(south, "reproduce", "20990101-000000-000000")
    assert missing.exit_code == 2 and "no imported run" in missing.output


# --- hostile bundles that need no real run (the checks before any record is read) ----------------------------

def _bare_bundle(d: Path, manifest: object, sig: object | None = None) -> Path:
    d.mkdir(parents=True)
    (d / "manifest.json").write_text(json.dumps(manifest))
    if sig is not None:
        (d / "manifest.sig").write_text(json.dumps(sig))
    return d


def _import(path: Path, results: Path, **kw):
    from harness.exchange.importer import import_bundle

    return import_bundle(path, results, [], **kw)


def test_malformed_bundles_are_refused_with_a_reason_not_a_traceback(tmp_path, monkeypatch):
    import tarfile

    import harness.exchange.importer as importer
    from harness.exchange.importer import ImportRefused

    ok = {"format": 1, "kind": "harness-bundle", "lab": "north", "runs": [], "files": {}, "fingerprints": {}}
    results = tmp_path / "results"
    cases = {
        "a signature that is a number": (_bare_bundle(tmp_path / "b1", ok, {"lab": "north", "public_key": "x",
                                                                           "signature": 7}), "malformed"),
        "a lab name with a newline": (_bare_bundle(tmp_path / "b2", {**ok, "lab": "north\n"}), "not a lab name"),
        "a run id with a newline": (_bare_bundle(tmp_path / "b3", {**ok, "runs": ["20261203-000000-abcdef\n"]}),
                                    "not a run id"),
        "a manifest that is a list": (_bare_bundle(tmp_path / "b4", [ok]), "not a harness bundle manifest"),
    }
    (tmp_path / "b5" / "manifest.json").mkdir(parents=True)
    (tmp_path / "b5" / "manifest.json" / "x").write_text("{}")
    cases["a manifest that is a folder"] = (tmp_path / "b5", "manifest.json: missing")
    for name, (bundle, why) in cases.items():
        with pytest.raises(ImportRefused, match=why):
            _import(bundle, results)
        assert not results.exists(), name
    # The size caps hold before a byte is unpacked (set low here: a real bomb would take gigabytes).
    monkeypatch.setattr(importer, "MAX_TOTAL_BYTES", 1000)
    big = _bare_bundle(tmp_path / "big", ok)
    (big / "baselines.json").write_bytes(b" " * 2000)
    with pytest.raises(ImportRefused, match="unpacks to more than"):
        _import(big, results)
    bomb = tmp_path / "bomb.tar.gz"
    with tarfile.open(bomb, "w:gz") as tar:
        tar.add(big / "baselines.json", arcname="baselines.json")
    with pytest.raises(ImportRefused, match="unpacks to more than"):
        _import(bomb, results)
    assert not results.exists()


def test_sync_counts_only_its_own_signed_manifests_as_published(tmp_path):
    import tarfile

    from harness.exchange.keys import init_keys
    from harness.exchange.sync import _published_runs

    key = init_keys("north", tmp_path / "config")
    folder = tmp_path / "bundles" / "north"
    folder.mkdir(parents=True)

    def bundle(name: str, runs: list[str], signer) -> None:
        import base64
        import io

        manifest = json.dumps({"lab": "north", "runs": runs}).encode()
        sig = json.dumps({"signature": base64.b64encode(signer.sign(manifest)).decode()}).encode()
        with tarfile.open(folder / name, "w:gz") as tar:
            for arc, data in (("manifest.json", manifest), ("manifest.sig", sig)):
                info = tarfile.TarInfo(arc)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    bundle("ours.tar.gz", ["20261203-000000-aaaaaa"], key)
    bundle("planted.tar.gz", ["20261203-000000-bbbbbb"], Ed25519PrivateKey.generate())  # someone with push access
    (folder / "junk.tar.gz").write_bytes(b"not a tarball")
    assert _published_runs(folder, key) == {"20261203-000000-aaaaaa"}
