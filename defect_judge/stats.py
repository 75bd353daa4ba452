"""Statistics used by evaluation and the comparison plots: thin wrappers over scipy.stats, so every
caller gets the same conventions (n = 0, the exact/chi-square switch) from one place."""
from __future__ import annotations


def wilson_interval(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default).

    Unlike the normal approximation it stays inside [0, 1] and is sensible for
    small n and for accuracies near 0 or 1. n = 0 gives (0, 1): nothing known.
    The interval is scipy's (``binomtest(...).proportion_ci(method="wilson")``): an installed
    library gives it, so the toolkit keeps no formula of its own; statsmodels'
    ``proportion_confint(method="wilson")`` is the same interval but is not a dependency, and
    adding it (with pandas and patsy) for one formula scipy already has would buy nothing.
    """
    from scipy.stats import binomtest

    if total <= 0:
        return 0.0, 1.0
    interval = binomtest(correct, total).proportion_ci(confidence_level=confidence, method="wilson")
    # The bounds are exactly 0 and 1 at k = 0 and k = n; rounding would leave the estimate outside its interval.
    low = 0.0 if correct == 0 else max(0.0, float(interval.low))
    high = 1.0 if correct == total else min(1.0, float(interval.high))
    return low, high


def mcnemar_exact(fixed: int, broken: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs.

    ``fixed``: samples (or twin pairs) the baseline got wrong and the other model right;
    ``broken``: the reverse. Under H0 each discordant one is a fair coin: scipy's exact
    two-sided binomial test of ``fixed`` successes in ``fixed + broken`` at p = 0.5.
    """
    from scipy.stats import binomtest

    n = fixed + broken
    if n == 0:
        return 1.0
    return min(1.0, float(binomtest(fixed, n, 0.5, alternative="two-sided").pvalue))


def mcnemar_chi2(fixed: int, broken: int) -> float:
    """McNemar's chi-square test with continuity correction (for large counts): scipy's chi-square
    survival function with 1 degree of freedom."""
    from scipy.stats import chi2

    n = fixed + broken
    if n == 0:
        return 1.0
    statistic = max(0, abs(fixed - broken) - 1) ** 2 / n
    return float(chi2.sf(statistic, df=1))


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
