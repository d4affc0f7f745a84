"""Significance: the t distribution against textbook values and closed forms, Welch's test, the keep decision."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.scoring.decision import keep_or_discard
from harness.scoring.stats import betainc, normal_cdf, olympic_mean, summarize, t_cdf, t_sf, welch


# --- the t distribution -----------------------------------------------------------------------

@pytest.mark.parametrize("t, df, two_sided", [
    (2.228, 10, 0.05),  # t table: 95 % two-sided critical values
    (12.706, 1, 0.05),
    (4.303, 2, 0.05),
    (2.086, 20, 0.05),
    (3.169, 10, 0.01),
    (2.042, 30, 0.05),
])
def test_two_sided_p_matches_t_tables(t, df, two_sided):
    assert 2 * t_sf(t, df) == pytest.approx(two_sided, abs=2e-4)


@pytest.mark.parametrize("t, df, one_sided", [(1.812, 10, 0.05), (2.764, 10, 0.01), (1.645, 1e9, 0.05),
                                              (6.314, 1, 0.05), (1.697, 30, 0.05)])
def test_one_sided_p_matches_t_tables(t, df, one_sided):
    assert t_sf(t, df) == pytest.approx(one_sided, abs=2e-4)


def test_large_df_is_normal():
    for t in (-3.0, -1.96, -0.5, 0.0, 0.7, 1.96, 2.5):
        assert t_cdf(t, 1e5) == pytest.approx(normal_cdf(t), abs=2e-5)
        assert t_cdf(t, math.inf) == pytest.approx(normal_cdf(t), abs=1e-12)
    assert 2 * t_sf(1.959964, 1e6) == pytest.approx(0.05, abs=1e-5)


@settings(max_examples=60, deadline=None)
@given(t=st.floats(-50, 50))
def test_closed_forms_for_one_and_two_degrees_of_freedom(t):
    assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)  # Cauchy
    assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(t=st.floats(-20, 20), df=st.floats(0.5, 500))
def test_t_cdf_is_symmetric_and_bounded(t, df):
    c = t_cdf(t, df)
    assert 0.0 <= c <= 1.0
    assert c + t_cdf(-t, df) == pytest.approx(1.0, abs=1e-12)


def test_betainc_known_values():
    assert betainc(1, 1, 0.3) == pytest.approx(0.3)  # uniform
    assert betainc(2, 3, 0.4) == pytest.approx(0.5248)  # 1 - (0.6^4 + 4*0.4*0.6^3)
    assert betainc(0.5, 0.5, 0.5) == pytest.approx(0.5)
    assert betainc(3, 2, 0.0) == 0.0 and betainc(3, 2, 1.0) == 1.0
    with pytest.raises(ValueError):
        betainc(0, 1, 0.5)


# --- summaries --------------------------------------------------------------------------------

def test_summarize():
    s = summarize([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0])
    assert (s.mean, s.n) == (5.0, 8)
    assert s.std == pytest.approx(math.sqrt(32 / 7))
    assert s.sem == pytest.approx(math.sqrt(32 / 7) / math.sqrt(8))
    one = summarize([1.5])
    assert (one.mean, one.n, one.std, one.sem) == (1.5, 1, None, None)
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError, match="not a finite number"):
        summarize([1.0, float("nan")])


def test_olympic_mean_drops_best_and_worst_from_five():
    assert olympic_mean([1.0, 2.0, 3.0, 4.0, 100.0]) == pytest.approx(3.0)
    assert olympic_mean([0.0, 5.0, 5.0, 5.0, 5.0, 9.0]) == pytest.approx(5.0)
    assert olympic_mean([1.0, 2.0, 3.0, 100.0]) == pytest.approx(26.5)  # n < 5: the plain mean


# --- Welch ------------------------------------------------------------------------------------

def test_welch_against_hand_computation():
    a = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
    b = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]
    w = welch(a, b)
    ma, mb = sum(a) / 15, sum(b) / 15
    va = sum((x - ma) ** 2 for x in a) / 14 / 15
    vb = sum((x - mb) ** 2 for x in b) / 14 / 15
    assert w.t == pytest.approx((ma - mb) / math.sqrt(va + vb))
    assert w.df == pytest.approx((va + vb) ** 2 / (va ** 2 / 14 + vb ** 2 / 14))
    assert w.t == pytest.approx(-2.46, abs=0.01) and w.df == pytest.approx(24.99, abs=0.05)  # Wikipedia example 1
    assert w.p_two_sided == pytest.approx(0.021, abs=0.001)
    assert w.p_one_sided == pytest.approx(w.p_two_sided / 2)
    assert w.delta == pytest.approx(ma - mb) and (w.mean_a, w.mean_b) == (pytest.approx(ma), pytest.approx(mb))


def test_welch_zero_variance_without_division_by_zero():
    same = welch([1.0, 1.0, 1.0], [1.0, 1.0])
    assert (same.t, same.p_one_sided, same.p_two_sided, same.delta) == (0.0, 0.5, 1.0, 0.0)
    apart = welch([0.9, 0.9], [1.0, 1.0])
    assert apart.t == -math.inf and apart.p_one_sided == 0.0
    one_sided_var = welch([0.9, 0.9, 0.9], [1.0, 1.1, 1.2])
    assert one_sided_var.df == pytest.approx(2.0) and math.isfinite(one_sided_var.t)


# --- the decision -----------------------------------------------------------------------------

def _seeds(mean: float, noise: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(mean, noise) for _ in range(n)]


def test_clearly_better_is_kept():
    d = keep_or_discard(_seeds(0.985, 5e-4, 3, 1), _seeds(0.998, 5e-4, 3, 2), alpha=0.05)
    assert d.keep and d.reason.startswith("significant: Δ -0.01") and "< 0.05" in d.reason
    assert d.delta < 0 and d.p < 0.05


def test_noise_is_discarded_as_within_noise():
    d = keep_or_discard([0.9979, 0.9984, 0.9977], [0.9980, 0.9983, 0.9979], alpha=0.05)
    assert not d.keep and d.reason.startswith("within noise: Δ -0.0001, p = ") and d.p >= 0.05
    assert d.delta == pytest.approx(-0.0000666, abs=1e-6)


def test_worse_is_discarded():
    d = keep_or_discard([1.002, 1.0025, 1.0018], [0.998, 0.9985, 0.9978], alpha=0.05)
    assert not d.keep and d.reason == "worse: Δ +0.0040"
    assert d.delta == pytest.approx(0.004)


def test_lower_mean_but_p_above_alpha_is_not_kept():
    cand, ref = [0.990, 1.000, 0.995], [1.000, 0.998, 0.999]
    assert keep_or_discard(cand, ref, alpha=0.05).keep is False
    assert keep_or_discard(cand, ref, alpha=0.5).keep is True


def test_too_few_seeds_says_what_is_missing():
    d = keep_or_discard([0.9], [1.0, 1.01], alpha=0.05)
    assert not d.keep and d.p is None
    assert "need >= 2 seeds on both sides" in d.reason and "the candidate has 1" in d.reason
    assert "harness submit --seeds 3" in d.reason
    d = keep_or_discard([0.9, 0.91], [], alpha=0.05)
    assert not d.keep and "the reference has 0" in d.reason and d.delta is None


def test_identical_constant_samples_are_not_kept():
    d = keep_or_discard([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], alpha=0.05)
    assert not d.keep and d.reason.startswith("within noise") and d.p == 0.5


def test_alpha_must_be_a_probability():
    with pytest.raises(ValueError):
        keep_or_discard([1.0, 1.0], [1.0, 1.0], alpha=0.0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.5, 2.0), min_size=2, max_size=6), st.lists(st.floats(0.5, 2.0), min_size=2, max_size=6))
def test_keep_implies_lower_mean_and_small_p(cand, ref):
    d = keep_or_discard(cand, ref, alpha=0.05)
    if d.keep:
        assert sum(cand) / len(cand) < sum(ref) / len(ref) and d.p < 0.05
    assert d.reason.split(":")[0] in ("significant", "within noise", "worse")


# --- the spread floor: never less spread than the class is known to have ------------------------

def test_constant_candidate_is_judged_with_the_class_noise():
    cand, ref = [0.995, 0.995, 0.995], [1.0, 1.0001, 0.9999]  # a hard-coded seed vs a tight reference
    assert keep_or_discard(cand, ref, alpha=0.05).keep  # both spreads tiny: the 0.005 gap looks certain
    d = keep_or_discard(cand, ref, alpha=0.05, noise_std=0.005)  # the class's seeds move BPB by 0.005
    assert not d.keep and d.reason.startswith("within noise")
    assert "class's seed noise" in d.reason and "candidate and reference" in d.reason
    ma, mb, v = 0.995, 1.0, 0.005 ** 2
    t = (ma - mb) / math.sqrt(v / 3 + v / 3)
    assert d.p == pytest.approx(t_cdf(t, 2.0), rel=1e-9)  # the plain test's df: n_b - 1 for a constant side


def test_class_noise_below_the_samples_leaves_the_plain_welch_test():
    cand, ref = _seeds(0.985, 5e-4, 3, 1), _seeds(0.998, 5e-4, 3, 2)
    floored = keep_or_discard(cand, ref, alpha=0.05, noise_std=1e-6)
    assert floored.keep and "spread taken as" not in floored.reason
    assert floored.p == pytest.approx(welch(cand, ref).p_one_sided, rel=1e-12)


def test_constant_samples_on_both_sides_without_class_noise_are_not_kept():
    d = keep_or_discard([0.9, 0.9, 0.9], [1.0, 1.0, 1.0], alpha=0.05)
    assert not d.keep and d.p is None and d.delta == pytest.approx(-0.1)
    assert "no run-to-run spread was measured" in d.reason and "harness baseline" in d.reason
    kept = keep_or_discard([0.9, 0.9, 0.9], [1.0, 1.0, 1.0], alpha=0.05, noise_std=0.01)  # known noise: a real test
    assert kept.keep and kept.p < 1e-3


def test_constant_candidate_without_class_noise_takes_the_reference_spread():
    cand, ref = [0.99, 0.99, 0.99], [1.0, 1.004, 0.996]  # ref std 0.004
    d = keep_or_discard(cand, ref, alpha=0.05)
    assert "candidate's spread taken as 0.004" in d.reason and "larger measured spread" in d.reason
    v = 0.004 ** 2  # both sides at the reference's spread, with the plain test's df (2, not 4)
    assert d.p == pytest.approx(t_cdf(-0.01 / math.sqrt(v / 3 + v / 3), 2.0), rel=1e-9)
    assert d.p > welch(cand, ref).p_one_sided  # three equal scores are not taken as an exact mean


@pytest.mark.parametrize("noise", [0.0, -1.0, float("nan"), float("inf")])
def test_broken_noise_estimates_are_ignored(noise):
    cand, ref = _seeds(0.985, 5e-4, 3, 1), _seeds(0.998, 5e-4, 3, 2)
    assert keep_or_discard(cand, ref, alpha=0.05, noise_std=noise) == keep_or_discard(cand, ref, alpha=0.05)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.5, 2.0), min_size=2, max_size=6), st.lists(st.floats(0.5, 2.0), min_size=2, max_size=6),
       st.floats(1e-4, 0.5))
def test_floored_p_never_beats_a_test_at_the_floor(cand, ref, noise):
    """Whatever the samples, the p-value is the one of a Welch test whose stds are at least the noise."""
    d = keep_or_discard(cand, ref, alpha=0.05, noise_std=noise)
    if d.p is None or d.delta >= 0:
        return
    ma, mb = sum(cand) / len(cand), sum(ref) / len(ref)
    sa, sb = (max(summarize(x).std, noise) for x in (cand, ref))
    t = (ma - mb) / math.sqrt(sa ** 2 / len(cand) + sb ** 2 / len(ref))
    assert d.p >= t_cdf(t, 1e9) - 1e-12  # no df makes a t distribution tighter than the normal one
    assert d.p >= welch(cand, ref).p_one_sided - 1e-12  # and the floor never makes the test bolder


def test_single_seeds_use_the_class_noise_as_a_known_spread():
    from statistics import NormalDist

    # One seed each: a z-test with the class's seed noise, p = Phi(delta / (sigma * sqrt(2))).
    d = keep_or_discard([0.90], [1.00], alpha=0.05, noise_std=0.02)
    assert d.keep and d.p == pytest.approx(NormalDist().cdf(-0.1 / (0.02 * 2 ** 0.5)), rel=1e-9)
    assert "z-test on the class's seed noise" in d.reason
    close = keep_or_discard([0.99], [1.00], alpha=0.05, noise_std=0.02)
    assert not close.keep and "within noise" in close.reason  # 0.35 sigma: not significant
    assert not keep_or_discard([1.10], [1.00], alpha=0.05, noise_std=0.02).keep  # worse
    # Without a measured noise there is no test at all.
    assert "need >= 2 seeds" in keep_or_discard([0.5], [1.0], alpha=0.05).reason


def test_the_class_noise_never_hides_a_sides_own_larger_spread():
    # Three scattered candidate seeds against one reference seed: the z-test takes the candidate's own
    # spread (0.2), not the class's (0.005), so a lottery of seeds is not a significant gain.
    scattered = keep_or_discard([0.70, 1.10, 0.89], [1.00], alpha=0.05, noise_std=0.005)
    assert not scattered.keep and "within noise" in scattered.reason and scattered.p > 0.1
    steady = keep_or_discard([0.896, 0.897, 0.897], [1.00], alpha=0.05, noise_std=0.005)
    assert steady.keep  # the same mean, with a steady spread, is significant
