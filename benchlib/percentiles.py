"""How many requests a percentile needs before a sample can bound it (pure arithmetic, no scipy).

Params validation (a search's percentile against `min_requests`) and the estimators of
benchlib.derive.stats ask the same question; the answer lives here, below both.
"""
from __future__ import annotations

import math

#: The level of every interval benchlib reports.
CONFIDENCE = 0.95


def min_samples_for_percentile(p: float, confidence: float = CONFIDENCE) -> int:
    """The smallest sample whose largest value can bound the p-quantile from above (p in (0, 1))."""
    # The upper order statistic exists when P(Binomial(n, p) <= n - 1) = 1 - p**n >= 1 - alpha/2.
    return math.ceil(math.log((1 - confidence) / 2) / math.log(p))
