"""Per-class baselines files and the normalisation arithmetic (harness.scoring; hand-computed values)."""

from __future__ import annotations

import json

import pytest

from harness.hw.calibration import Calibration
from harness.scoring.baselines import (
    BaselineFormatError,
    Baselines,
    BaselineSample,
    BaselineStats,
    add_sample,
    load_baselines,
    merge_baselines,
    save_baselines,
    stats_of,
)
from harness.scoring.normalize import normalize, scorecard_line, speed_factor

H100 = "H100-SXM-80GB·700W"


def _s(v, rid, seed=1, host="node-a"):
    return BaselineSample(val_bpb=v, tokens=499_600_000, run_id=rid, seed=seed, host=host)


def _three() -> Baselines:
    b = Baselines()
    for i, v in enumerate([0.9974, 0.9984, 0.9979]):
        assert add_sample(b, "tiny", H100, _s(v, f"r{i}", seed=i))
    return b


def test_stats_hand_computed():
    st = stats_of([0.9974, 0.9984, 0.9979])
    assert st.n == 3
    assert st.mean == pytest.approx(0.9979)
    assert st.std == pytest.approx(0.0005)  # sqrt((25e-8 + 25e-8 + 0) / 2)
    assert stats_of([1.0]).std is None and stats_of([]) is None


def test_normalize_with_z_and_scorecard_line():
    n = normalize(0.9812, H100, _three(), benchmark="tiny")
    assert n.baseline_n == 3 and n.baseline_mean == pytest.approx(0.9979)
    assert n.delta == pytest.approx(-0.0167)
    assert n.z == pytest.approx(-33.4)
    assert n.relative == pytest.approx(-0.0167 / 0.9979)
    assert n.note is None and n.speed_factor is None and n.class_label == H100
    assert n.line() == (
        "val_bpb 0.9812 · H100-SXM-80GB·700W · Δ -0.0167 vs class baseline 0.9979 ± 0.0005 (n=3) · z -33"
    )
    assert json.dumps(n.to_dict(), ensure_ascii=False)


def test_small_z_formatting_and_stats_input():
    n = normalize(0.9985, H100, BaselineStats(mean=0.9979, std=0.0005, n=5))
    assert n.z == pytest.approx(1.2)
    assert scorecard_line(n).endswith("Δ +0.0006 vs class baseline 0.9979 ± 0.0005 (n=5) · z 1.2")
    n2 = normalize(0.9985, H100, [0.9974, 0.9984, 0.9979])
    assert n2.baseline_n == 3 and n2.z == pytest.approx(1.2)
    n3 = normalize(1.0039, H100, [0.9974, 0.9984, 0.9979])
    assert n3.z == pytest.approx(12.0) and n3.line().endswith("· z 12")


def test_z_none_with_reason():
    one = normalize(0.99, H100, [0.98])
    assert one.z is None and one.delta == pytest.approx(0.01) and "n=1" in one.note
    assert one.line().endswith("Δ +0.0100 vs class baseline 0.9800 (n=1) · z n/a (z needs 2+ baseline runs (n=1))")
    flat = normalize(0.99, H100, [0.98, 0.98])
    assert flat.z is None and flat.baseline_std == 0.0 and "std is 0" in flat.note


def test_no_baseline_line():
    n = normalize(0.9812, "RTX4090-24GB·450W", _three(), benchmark="tiny")
    assert n.baseline_mean is None and n.baseline_n == 0 and n.z is None and n.delta is None
    assert n.line() == (
        "val_bpb 0.9812 · RTX4090-24GB·450W · no baseline for this class yet: "
        "run harness baseline --benchmark tiny --runs 5"
    )
    with pytest.raises(ValueError):
        normalize(0.9812, H100, _three())  # benchmark missing


def test_speed_factor_hand_computed():
    ref_expected = 989.5e12 * 0.70  # H100-SXM bf16 peak x expected matmul efficiency = 692.65e12
    cal = Calibration("cuda", "bf16", ref_expected / 2, 1e12, 3.0)
    assert speed_factor(cal) == pytest.approx(0.5)
    assert speed_factor({"matmul_flops": ref_expected}) == pytest.approx(1.0)
    assert speed_factor(2e10) == pytest.approx(2e10 / ref_expected)  # a CPU's fp32 against bf16 H100
    assert speed_factor(None) is None
    assert speed_factor(1e12, "Unknown-1GB·1W") is None
    n = normalize(0.99, H100, _three(), cal, benchmark="tiny")
    assert n.speed_factor == pytest.approx(0.5) and n.reference_class == H100
    assert scorecard_line(n, with_speed=True).endswith("· speed 0.50x H100-SXM-80GB·700W")


def test_add_sample_dedupes_and_keywords():
    b = Baselines()
    assert add_sample(b, "tiny", H100, val_bpb=0.99, run_id="x", seed=3, host="h", tokens=10)
    assert not add_sample(b, "tiny", H100, val_bpb=0.50, run_id="x")
    assert [s.val_bpb for s in b.samples("tiny", H100)] == [0.99]
    with pytest.raises(ValueError):
        add_sample(b, "tiny", H100, val_bpb=float("nan"), run_id="y")


def test_merge_dedupes_by_run_id():
    a = _three()
    other = Baselines()
    add_sample(other, "tiny", H100, _s(0.5, "r1"))  # same run id as a's second sample: dropped
    add_sample(other, "tiny", H100, _s(0.9979, "r9", host="node-b"))
    add_sample(other, "tiny", "A100-SXM-80GB·400W", _s(1.05, "a1"))
    add_sample(other, "small", H100, _s(0.9, "s1"))
    m = merge_baselines(a, other)
    assert [s.run_id for s in m.samples("tiny", H100)] == ["r0", "r1", "r2", "r9"]
    assert m.samples("tiny", H100)[1].val_bpb == 0.9984
    assert m.stats("tiny", H100).n == 4 and m.stats("tiny", H100).mean == pytest.approx(0.9979)
    assert m.benchmarks() == ["small", "tiny"] and m.classes("tiny") == ["A100-SXM-80GB·400W", H100]
    assert merge_baselines(m, m) == m  # idempotent
    assert a.stats("tiny", H100).n == 3  # inputs untouched


def test_save_load_roundtrip(tmp_path):
    b = _three()
    b.data["tiny"][H100][0].extra["fixed_hash"] = "abc"
    p = tmp_path / "sub" / "baselines.json"
    save_baselines(b, p)
    text = p.read_text(encoding="utf-8")
    assert "H100-SXM-80GB·700W" in text  # not \u00b7-escaped
    d = json.loads(text)
    assert d["format"] == "harness-baselines" and d["version"] == 1
    entry = d["benchmarks"]["tiny"][H100]
    assert entry["n"] == 3 and entry["mean"] == pytest.approx(0.9979) and entry["std"] == pytest.approx(0.0005)
    assert entry["samples"][0] == {"val_bpb": 0.9974, "tokens": 499_600_000, "run_id": "r0", "seed": 0,
                                   "host": "node-a", "recorded_at": None, "fixed_hash": "abc"}
    back = load_baselines(p)
    assert back == b and back.samples("tiny", H100)[0].extra == {"fixed_hash": "abc"}
    assert load_baselines(tmp_path / "missing.json") == Baselines()


def test_computed_fields_are_recomputed_on_load(tmp_path):
    p = tmp_path / "b.json"
    p.write_text(json.dumps({"format": "harness-baselines", "version": 1, "benchmarks": {"tiny": {H100: {
        "samples": [{"val_bpb": 1.0, "run_id": "a"}, {"val_bpb": 2.0, "run_id": "b"}, {"val_bpb": 9.0, "run_id": "a"}],
        "mean": 123.0, "std": 0.0, "n": 99}}}}), encoding="utf-8")
    st = load_baselines(p).stats("tiny", H100)
    assert st.n == 2 and st.mean == 1.5  # duplicate run id dropped, file's mean ignored


@pytest.mark.parametrize(
    "doc, msg",
    [
        ({"format": "other", "version": 1}, "not a baselines file"),
        ({"format": "harness-baselines", "version": 2}, "unsupported version"),
        ({"format": "harness-baselines", "version": 1, "benchmarks": {"t": {"c": {}}}}, "samples"),
        ({"format": "harness-baselines", "version": 1, "benchmarks": {"t": {"c": {"samples": [{"run_id": "x"}]}}}},
         "val_bpb"),
    ],
)
def test_bad_files(tmp_path, doc, msg):
    p = tmp_path / "b.json"
    p.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(BaselineFormatError, match=msg):
        load_baselines(p)
    p.write_text("{nope", encoding="utf-8")
    with pytest.raises(BaselineFormatError):
        load_baselines(p)
