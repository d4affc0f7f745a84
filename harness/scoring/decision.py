"""The keep/discard decision: is a candidate's BPB significantly lower than its reference's?

``keep_or_discard(cand, ref)`` keeps a candidate only when its mean BPB is lower and the one-sided Welch
p < alpha, with each side's spread floored at the class's seed noise (the arithmetic is
:mod:`harness.scoring.stats`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from harness.scoring.stats import MIN_SEEDS, finite_samples, mean_var, welch_from_moments


@dataclass(frozen=True)
class Decision:
    keep: bool
    reason: str
    delta: float | None  # mean(candidate) - mean(reference); None when a side has no samples
    p: float | None  # one-sided Welch p (candidate lower); None without a t-test

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def format_delta(delta: float) -> str:
    if delta != 0.0 and abs(delta) < 5e-5:
        return f"{delta:+.1e}"
    return f"{delta:+.4f}"


def format_p(p: float) -> str:
    if p == 0.0:
        return "0"
    if p < 1e-3:
        return f"{p:.1e}"
    return f"{p:.2g}"


def keep_or_discard(candidate: Sequence[float], reference: Sequence[float], alpha: float = 0.05,
           noise_std: float | None = None) -> Decision:
    """Keep the candidate only when its mean BPB is lower than the reference's and the one-sided Welch p < alpha.

    The test never assumes less spread than is known to exist. ``noise_std`` is the class's measured seed
    noise (the std of its baseline runs); each side's std is max(its sample std, noise_std). Without it
    the floor is the larger of the two sample stds, applied to both sides; the degrees of freedom stay
    at most the unfloored test's, so the p-value is never below the plain Welch test's. So a candidate whose runs all
    score the same (it fixed its own seed: ``seed_ignored`` runs, which still count) is judged with the
    spread its class or its reference shows, never as an exact number with p ~ 0; and when neither side
    varies and no class noise is known there is no measure of noise at all: not kept, and the reason says
    how to measure it. A floor that changed a side's spread is named in the reason.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1) (got {alpha})")
    if noise_std is not None and not (math.isfinite(noise_std) and noise_std > 0.0):
        noise_std = None  # a zero or broken estimate says nothing about the noise
    cand, ref = finite_samples(candidate, "candidate"), finite_samples(reference, "reference")
    delta = (math.fsum(cand) / len(cand) - math.fsum(ref) / len(ref)) if cand and ref else None
    if (len(cand) < MIN_SEEDS or len(ref) < MIN_SEEDS) and cand and ref and noise_std is not None:
        return _known_noise(cand, ref, alpha, noise_std)
    if len(cand) < MIN_SEEDS or len(ref) < MIN_SEEDS:
        missing = []
        if len(cand) < MIN_SEEDS:
            missing.append(f"the candidate has {len(cand)}")
        if len(ref) < MIN_SEEDS:
            missing.append(f"the reference has {len(ref)}")
        return Decision(keep=False, delta=delta, p=None,
                        reason=(f"need >= {MIN_SEEDS} seeds on both sides for a t-test ({' and '.join(missing)}), or "
                                f"a class baseline for its seed noise: run harness submit --seeds 3, or harness "
                                f"baseline --runs 5 once"))
    (mean_a, var_a), (mean_b, var_b) = mean_var(cand), mean_var(ref)
    std_a, std_b = math.sqrt(var_a), math.sqrt(var_b)
    floor = noise_std if noise_std is not None else max(std_a, std_b)
    if floor == 0.0 and mean_a < mean_b:  # both sides constant, no class noise: no evidence either way
        return Decision(keep=False, delta=mean_a - mean_b, p=None,
                        reason=(f"within noise: Δ {format_delta(mean_a - mean_b)}, but no run-to-run spread was "
                                "measured (every score on both sides is the same and this class has no baseline "
                                "noise): run harness baseline --runs 5 on this class, then submit again"))
    # The floored variances, with no more degrees of freedom than the samples' own: raising one side's
    # spread can raise Welch's df (towards n_a + n_b - 2), which must not make the test bolder.
    raw_df = welch_from_moments(mean_a, var_a, len(cand), mean_b, var_b, len(ref)).df
    w = welch_from_moments(mean_a, max(std_a, floor) ** 2, len(cand), mean_b, max(std_b, floor) ** 2, len(ref),
                       max_df=raw_df)
    d, p = format_delta(w.delta), format_p(w.p_one_sided)
    if w.delta > 0.0:
        return Decision(keep=False, reason=f"worse: Δ {d}", delta=w.delta, p=w.p_one_sided)
    note = _floor_note(floor, noise_std is not None, std_a < floor, std_b < floor)
    if w.delta < 0.0 and w.p_one_sided < alpha:
        return Decision(keep=True, reason=f"significant: Δ {d}, p = {p} < {alpha:g}{note}", delta=w.delta,
                        p=w.p_one_sided)
    return Decision(keep=False, reason=f"within noise: Δ {d}, p = {p} >= {alpha:g}{note}", delta=w.delta,
                    p=w.p_one_sided)


def _known_noise(cand: list[float], ref: list[float], alpha: float, sigma: float) -> Decision:
    """Too few seeds for a t-test on a side (a single-seed CI walk): a one-sided z-test with the class's
    measured seed noise as the spread of every score, or a side's own measured spread where it has one
    and it is larger (a candidate whose seeds scatter widely is not judged as if it were steady)."""
    delta = math.fsum(cand) / len(cand) - math.fsum(ref) / len(ref)
    var_a, var_b = (max(sigma ** 2, mean_var(s)[1]) if len(s) >= MIN_SEEDS else sigma ** 2 for s in (cand, ref))
    z = delta / math.sqrt(var_a / len(cand) + var_b / len(ref))
    p = 0.5 * math.erfc(-z / math.sqrt(2.0))  # P(Z <= z): small when the candidate is clearly lower
    d, ps = format_delta(delta), format_p(p)
    how = f" (z-test on the class's seed noise {sigma:.2g}: {len(cand)} and {len(ref)} seed(s))"
    if delta > 0.0:
        return Decision(keep=False, reason=f"worse: Δ {d}{how}", delta=delta, p=p)
    if delta < 0.0 and p < alpha:
        return Decision(keep=True, reason=f"significant: Δ {d}, p = {ps} < {alpha:g}{how}", delta=delta, p=p)
    return Decision(keep=False, reason=f"within noise: Δ {d}, p = {ps} >= {alpha:g}{how}", delta=delta, p=p)


def _floor_note(floor: float, from_class: bool, cand_raised: bool, ref_raised: bool) -> str:
    sides = [s for s, raised in (("candidate", cand_raised), ("reference", ref_raised)) if raised]
    if not sides:
        return ""
    source = "the class's seed noise" if from_class else "the larger measured spread"
    return f" (the {' and '.join(sides)}'s spread taken as {floor:.2g}, {source})"
