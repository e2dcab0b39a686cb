"""Summaries of repeated runs: means with t confidence intervals, and paired differences
(the same seeds, split and budget in every arm) from a reference arm."""

from __future__ import annotations

import numpy as np


def mean_interval(values, level: float = 0.95) -> tuple[float, list[float] | None]:
    """(mean, [low, high]) of `values` with the two-sided t interval of the mean (n - 1
    degrees of freedom); no interval for fewer than two values."""
    from scipy import stats

    values = np.asarray(values, np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, None
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return mean, [mean - float(half), mean + float(half)]


def paired_summary(results: dict[str, list[float]], reference: str) -> dict[str, dict]:
    """Per arm ({arm: values by seed, in one seed order}): `values`, `mean`, `ci95`, and
    for arms other than `reference` the paired difference `diff` (arm minus reference,
    over the seeds both have) with its `diff_ci95`."""
    out = {}
    for arm, values in results.items():
        mean, interval = mean_interval(values)
        row = {"values": list(values), "mean": mean, "ci95": interval}
        common = min(len(values), len(results.get(reference, [])))
        if arm != reference and common:
            diff = np.subtract(values[:common], results[reference][:common])
            row["diff"], row["diff_ci95"] = mean_interval(diff)
        out[arm] = row
    return out
