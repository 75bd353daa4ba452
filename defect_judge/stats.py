"""Statistics used by evaluation and the comparison plots."""
from __future__ import annotations

import math


def wilson_interval(correct: int, total: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default).

    Unlike the normal approximation it stays inside [0, 1] and is sensible for
    small n and for accuracies near 0 or 1. n = 0 gives (0, 1): nothing known.
    """
    if total <= 0:
        return 0.0, 1.0
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    # The bounds are exactly 0 and 1 at k = 0 and k = n; rounding would leave the estimate outside its interval.
    low = 0.0 if correct == 0 else max(0.0, centre - half)
    high = 1.0 if correct == total else min(1.0, centre + half)
    return low, high


def mcnemar_exact(fixed: int, broken: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs.

    ``fixed``: samples the baseline got wrong and the other model right;
    ``broken``: the reverse. Under H0 each discordant pair is a fair coin, so
    the p-value is the two-sided binomial tail of min(fixed, broken) in n.
    """
    n = fixed + broken
    if n == 0:
        return 1.0
    k = min(fixed, broken)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def mcnemar_chi2(fixed: int, broken: int) -> float:
    """McNemar's chi-square test with continuity correction (for large counts)."""
    n = fixed + broken
    if n == 0:
        return 1.0
    statistic = (abs(fixed - broken) - 1) ** 2 / n
    return math.erfc(math.sqrt(statistic / 2))  # survival function of chi2 with 1 dof


def mcnemar(fixed: int, broken: int) -> tuple[float, str]:
    """The exact test for fewer than 25 discordant pairs (the usual rule), else chi-square."""
    if fixed + broken < 25:
        return mcnemar_exact(fixed, broken), "exact binomial"
    return mcnemar_chi2(fixed, broken), "chi-square, continuity-corrected"


def binomial_p_above(correct: int, total: int, rate: float) -> float:
    """One-sided exact binomial p-value that an accuracy of correct/total beats ``rate`` by chance alone
    (H0: the true accuracy is ``rate``, e.g. always answering the majority class)."""
    from scipy.stats import binomtest

    if total <= 0:
        return 1.0
    return float(binomtest(correct, total, rate, alternative="greater").pvalue)
