"""`molspectra_jax.stats` against scipy's own t interval and paired t-test."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from molspectra_jax import stats


def test_mean_interval_is_scipys_t_interval():
    values = [191.2, 188.4, 195.0, 190.1, 193.3]
    mean, (low, high) = stats.mean_interval(values)
    expected = scipy_stats.t.interval(
        0.95, len(values) - 1, loc=np.mean(values), scale=scipy_stats.sem(values)
    )
    assert mean == pytest.approx(np.mean(values))
    assert (low, high) == pytest.approx(expected)
    assert stats.mean_interval([3.0]) == (3.0, None)


def test_paired_differences_use_the_common_seeds():
    results = {"denoising": [190.0, 192.0, 189.0, 195.0], "full": [188.0, 191.5, 186.0]}
    summary = stats.paired_summary(results, "denoising")
    assert "diff" not in summary["denoising"]
    diff = np.subtract(results["full"], results["denoising"][:3])
    assert summary["full"]["diff"] == pytest.approx(diff.mean())
    # The interval excludes 0 exactly when the paired t-test rejects at 5%.
    p = scipy_stats.ttest_rel(results["full"], results["denoising"][:3]).pvalue
    low, high = summary["full"]["diff_ci95"]
    assert (high < 0 or low > 0) == (p < 0.05)
