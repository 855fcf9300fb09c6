"""95 % confidence intervals for accuracies measured on n eval windows, and for differences of two of them.

- one accuracy: the Wilson score interval (good at small n and near 0 or 1, unlike the normal approximation);
- a difference (INT8 or pruned minus its fp32 twin, on the same windows): Newcombe's hybrid score interval
  for two proportions (method 10), built from the two Wilson intervals. It treats the two as independent,
  which is conservative for paired predictions on the same windows (the record keeps predictions, not
  labels, so the paired interval cannot be formed afterwards): the true interval is at most this wide.
"""
from __future__ import annotations

import math

Z95 = 1.959963984540054


def wilson(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    if n <= 0:
        return (float("nan"), float("nan"))
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def difference(p1: float, n1: int, p2: float, n2: int, z: float = Z95) -> tuple[float, float]:
    """Interval for p1 - p2 (Newcombe 1998, method 10)."""
    l1, u1 = wilson(p1, n1, z)
    l2, u2 = wilson(p2, n2, z)
    d = p1 - p2
    return (d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))
