"""Welch's t-test in pure Python and sample summaries: the arithmetic under every comparison of BPBs.

Lower BPB is better. Everything here is plain floats: no numpy, no scipy. The keep/discard rule built on
it is :mod:`harness.scoring.decision`.

- ``t_cdf(t, df)``      Student t CDF through the regularized incomplete beta function (continued fraction)
- ``welch(a, b)``       Welch's unequal-variance t-test of mean(a) - mean(b)
- ``summarize(xs)``     mean, sample std, n, standard error of the mean
- ``olympic_mean(xs)``  MLPerf-style mean: drop the best and the worst when n >= 5
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

MIN_SEEDS = 2
_CF_EPS = 1e-15
_CF_TINY = 1e-300
_CF_MAX_ITER = 20000
_NORMAL_DF = 1e7  # beyond this many degrees of freedom the t distribution is the normal one (to ~1e-8)


# --- distributions -----------------------------------------------------------------------------

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz evaluation)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = _CF_TINY if abs(d) < _CF_TINY else d
    d = 1.0 / d
    h = d
    for m in range(1, _CF_MAX_ITER + 1):
        m2 = 2 * m
        # even step
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = _CF_TINY if abs(d) < _CF_TINY else d
        c = 1.0 + aa / c
        c = _CF_TINY if abs(c) < _CF_TINY else c
        d = 1.0 / d
        h *= d * c
        # odd step
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = _CF_TINY if abs(d) < _CF_TINY else d
        c = 1.0 + aa / c
        c = _CF_TINY if abs(c) < _CF_TINY else c
        d = 1.0 / d
        step = d * c
        h *= step
        if abs(step - 1.0) < _CF_EPS:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if a <= 0 or b <= 0:
        raise ValueError(f"betainc needs a, b > 0 (got a={a}, b={b})")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc needs 0 <= x <= 1 (got x={x})")
    if x == 0.0 or x == 1.0:
        return x
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    # The fraction converges fast for x < (a+1)/(a+b+2); use the symmetry I_x(a,b) = 1 - I_{1-x}(b,a) otherwise.
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with df > 0 degrees of freedom (df may be fractional, or inf)."""
    if math.isnan(t) or math.isnan(df):
        raise ValueError("t_cdf of NaN")
    if df <= 0:
        raise ValueError(f"t_cdf needs df > 0 (got {df})")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    if df > _NORMAL_DF:
        return normal_cdf(t)
    t2 = t * t
    if t2 < df:
        # Near the centre df/(df+t^2) rounds to 1: use P(|T| < |t|) = I_{t^2/(df+t^2)}(1/2, df/2) instead.
        half_inner = 0.5 * betainc(0.5, df / 2.0, t2 / (df + t2))
        return 0.5 + half_inner if t > 0 else 0.5 - half_inner
    # P(|T| > |t|) = I_{df/(df+t^2)}(df/2, 1/2): accurate far out in the tails
    tail2 = betainc(df / 2.0, 0.5, df / (df + t2))
    return 1.0 - 0.5 * tail2 if t > 0 else 0.5 * tail2


def t_sf(t: float, df: float) -> float:
    """P(T > t), computed without the cancellation of 1 - t_cdf for large t."""
    return t_cdf(-t, df)


# --- samples ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    mean: float
    std: float | None  # sample standard deviation (n - 1); None when n < 2
    n: int
    sem: float | None  # std / sqrt(n); None when n < 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def finite_samples(xs: Sequence[float], what: str = "samples") -> list[float]:
    out = []
    for x in xs:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            raise ValueError(f"{what}: {x!r} is not a finite number")
        out.append(float(x))
    return out


def mean_var(xs: list[float]) -> tuple[float, float]:
    """Mean and sample variance (0.0 for n == 1), two-pass for accuracy."""
    n = len(xs)
    mean = math.fsum(xs) / n
    if n < 2:
        return mean, 0.0
    return mean, math.fsum((x - mean) ** 2 for x in xs) / (n - 1)


def summarize(samples: Sequence[float]) -> Sample:
    xs = finite_samples(samples)
    if not xs:
        raise ValueError("summarize: no samples")
    mean, var = mean_var(xs)
    if len(xs) < 2:
        return Sample(mean=mean, std=None, n=1, sem=None)
    std = math.sqrt(var)
    return Sample(mean=mean, std=std, n=len(xs), sem=std / math.sqrt(len(xs)))


def olympic_mean(xs: Sequence[float]) -> float:
    """The mean after dropping the single best and single worst value when there are at least 5 (MLPerf)."""
    vals = sorted(finite_samples(xs))
    if not vals:
        raise ValueError("olympic_mean: no samples")
    if len(vals) >= 5:
        vals = vals[1:-1]
    return math.fsum(vals) / len(vals)


# --- Welch's t-test ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Welch:
    t: float  # (mean_a - mean_b) / standard error; +-inf when both variances are 0 and the means differ
    df: float  # Welch-Satterthwaite degrees of freedom
    p_one_sided: float  # P(T <= t): evidence that mean(a) < mean(b), i.e. that a has the LOWER BPB
    p_two_sided: float
    mean_a: float
    mean_b: float
    delta: float  # mean_a - mean_b (negative: a is better)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def welch(a: Sequence[float], b: Sequence[float]) -> Welch:
    """Welch's t-test of mean(a) against mean(b); each side needs at least 2 samples.

    The one-sided p-value tests H1: mean(a) < mean(b) (a is the candidate, lower BPB is better).
    Identical zero-variance samples give t = 0 and p = 0.5 / 1.0, never a division by zero.
    """
    xa, xb = finite_samples(a, "a"), finite_samples(b, "b")
    if len(xa) < MIN_SEEDS or len(xb) < MIN_SEEDS:
        raise ValueError(f"welch needs >= {MIN_SEEDS} samples on each side (got {len(xa)} and {len(xb)})")
    return welch_from_moments(*mean_var(xa), len(xa), *mean_var(xb), len(xb))


def welch_from_moments(mean_a: float, var_a: float, na: int, mean_b: float, var_b: float, nb: int,
                   max_df: float = math.inf) -> Welch:
    """Welch's test from each side's mean, sample variance and size (n >= 2 each); df at most max_df."""
    delta = mean_a - mean_b
    va, vb = var_a / na, var_b / nb
    se2 = va + vb
    if se2 > 0.0:
        t = delta / math.sqrt(se2)
        denom = (va * va / (na - 1) if va else 0.0) + (vb * vb / (nb - 1) if vb else 0.0)
        df = se2 * se2 / denom if denom > 0.0 else float(na + nb - 2)
    else:  # both sides constant: any difference is exact, no difference is no evidence
        df = float(na + nb - 2)
        t = 0.0 if delta == 0.0 else math.copysign(math.inf, delta)
    df = min(df, max_df)
    if t == 0.0:
        p_one, p_two = 0.5, 1.0
    else:
        p_one = t_cdf(t, df)
        p_two = min(1.0, 2.0 * t_cdf(-abs(t), df))
    return Welch(t=t, df=df, p_one_sided=p_one, p_two_sided=p_two, mean_a=mean_a, mean_b=mean_b, delta=delta)
