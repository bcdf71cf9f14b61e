"""Statistics of a study's runs over seeds: mean ± sample std, Student-t 95 % intervals (the t
quantile from the regularised incomplete beta function, no SciPy), and the per-setting description
that ``gkl summarize`` tabulates (paired differences use the same interval)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ["confidence_interval", "describe", "mean_std", "t_quantile"]


def mean_std(values: Sequence[float]) -> str:
    """``m ± s`` (sample std) for several values, the value itself for one."""
    if len(values) == 1:
        return f"{values[0]:6.2f}"
    return f"{statistics.mean(values):6.2f} ± {statistics.stdev(values):4.2f}"


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (Lentz's method)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
            if aa == 0:
                break
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _t_cdf(t: float, df: float) -> float:
    x = df / (df + t * t)
    front = (
        math.exp(
            math.lgamma((df + 1) / 2)
            - math.lgamma(df / 2)
            - math.lgamma(0.5)
            + (df / 2) * math.log(x)
            + 0.5 * math.log1p(-x)
        )
        if 0 < x < 1
        else 0.0
    )
    a, b = df / 2, 0.5
    if x < (a + 1) / (a + b + 2):
        tail = front * _betacf(a, b, x) / a  # = I_x(df/2, 1/2)
    else:
        tail = 1.0 - front * _betacf(b, a, 1.0 - x) / b if 0 < x < 1 else (1.0 if x >= 1 else 0.0)
    return 1.0 - 0.5 * tail if t >= 0 else 0.5 * tail


def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t distribution with ``df`` degrees of freedom (bisection, 1e-12)."""
    if not 0.0 < p < 1.0 or df < 1:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df >= 1, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return 0.5 * (lo + hi)


def confidence_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """Student-t interval for the mean of ``values``; None for fewer than two values."""
    n = len(values)
    if n < 2:
        return None
    mean, std = statistics.mean(values), statistics.stdev(values)
    half = t_quantile(0.5 + level / 2, n - 1) * std / math.sqrt(n)
    return mean - half, mean + half


def describe(values_by_seed: dict[int, float]) -> dict[str, Any]:
    """n, mean, std, 95 % CI and the per-seed values."""
    values = [values_by_seed[s] for s in sorted(values_by_seed)]
    ci = confidence_interval(values)
    return {
        "n": len(values),
        "mean": statistics.mean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "ci95": list(ci) if ci else None,
        "values": {str(s): values_by_seed[s] for s in sorted(values_by_seed)},
    }
