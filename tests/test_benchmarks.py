"""benchmarks.yaml: loading, schema errors that name the benchmark and the field."""

from __future__ import annotations

import copy

import pytest
import yaml

from harness.benchmarks import BenchmarkError, get_benchmark, load_benchmarks, parse_benchmarks, size_bytes
from harness.paths import REPO_ROOT

DOC = yaml.safe_load((REPO_ROOT / "benchmarks.yaml").read_text())


def test_shipped_benchmarks_load():
    found = load_benchmarks()
    assert {"tiny", "climbmix"} <= set(found)
    tiny, climb = found["tiny"], found["climbmix"]
    assert tiny.time_budget_s == 60 and tiny.data["source"] == "markov"
    assert (climb.seq_len, climb.vocab_size, climb.eval_tokens, climb.time_budget_s) == (2048, 8192, 40 * 524288, 300)
    assert climb.data["val_shard"] == 6542
    for b in found.values():
        assert b.hard_timeout_s > b.time_budget_s and "prepare" in b.allowed_imports and b.model_hint


def broken(path: list[str], value) -> dict:
    doc = copy.deepcopy(DOC)
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


@pytest.mark.parametrize("path,value,expect", [
    (["benchmarks", "tiny", "seq_len"], "long", "benchmark 'tiny', field 'seq_len'"),
    (["benchmarks", "climbmix", "data", "val_shard"], -1, "benchmark 'climbmix', field 'data.val_shard'"),
    (["benchmarks", "tiny", "limits", "memory"], "lots", "benchmark 'tiny', field 'limits.memory'"),
    (["benchmarks", "tiny", "time_budget_s"], 0, "benchmark 'tiny', field 'time_budget_s'"),
    (["benchmarks", "tiny", "eval_tokens"], 1000, "benchmark 'tiny', field 'eval_tokens'"),
    (["benchmarks", "tiny", "hard_timeout_s"], 30, "benchmark 'tiny', field 'hard_timeout_s'"),
    (["benchmarks", "tiny", "allowed_imports"], ["torch"], "benchmark 'tiny', field 'allowed_imports'"),
    (["benchmarks", "tiny", "runtime"], "runsc --root=/", "benchmark 'tiny', field 'runtime'"),
    (["benchmarks", "tiny", "runtime"], 3, "benchmark 'tiny', field 'runtime'"),
])
def test_bad_fields_are_named(path, value, expect):
    with pytest.raises(BenchmarkError) as e:
        parse_benchmarks(broken(path, value), source="benchmarks.yaml")
    assert expect in str(e.value)


def test_unknown_field_and_missing_field():
    doc = broken(["benchmarks", "tiny", "budgett"], 5)
    with pytest.raises(BenchmarkError, match="benchmark 'tiny'.*budgett"):
        parse_benchmarks(doc)
    doc = copy.deepcopy(DOC)
    del doc["benchmarks"]["climbmix"]["seq_len"]
    with pytest.raises(BenchmarkError, match="benchmark 'climbmix'.*seq_len"):
        parse_benchmarks(doc)


def test_bad_yaml_names_file_and_line(tmp_path):
    f = tmp_path / "benchmarks.yaml"
    f.write_text("schema_version: 1\nbenchmarks:\n  tiny: [unclosed\n")
    with pytest.raises(BenchmarkError, match=r"benchmarks.yaml:\d+: not valid YAML"):
        load_benchmarks(f)


def test_unknown_benchmark_lists_known():
    with pytest.raises(BenchmarkError, match="no benchmark 'huge'; known: climbmix, tiny"):
        get_benchmark("huge")


def test_size_bytes():
    assert size_bytes("6g") == 6 << 30 and size_bytes("256m") == 256 << 20
    with pytest.raises(BenchmarkError):
        size_bytes("6 GB")


def test_runtime_setting_defaults_to_the_daemons_and_is_read():
    assert load_benchmarks()["tiny"].runtime is None  # shipped: dockerd's default (runc)
    doc = broken(["benchmarks", "tiny", "runtime"], "runsc")
    assert parse_benchmarks(doc)["tiny"].runtime == "runsc"
    assert parse_benchmarks(doc)["tiny"].to_dict()["runtime"] == "runsc"
    doc = copy.deepcopy(DOC)
    del doc["benchmarks"]["tiny"]["runtime"]
    assert parse_benchmarks(doc)["tiny"].runtime is None
