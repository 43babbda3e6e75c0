"""Where a scaling curve stops improving: the plateau of a metric against training size, over seeds."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PLATEAU_METHOD = (
    "plateau = the smallest training size from which every larger size's mean is within 2 standard errors of the "
    "largest size's mean (standard error of the difference of two means over seeds, sqrt(s1²/n1 + s2²/n2), with a "
    "floor of 0.005 so a curve with no seed noise is not held to an exact match); the largest size itself does "
    "not count as a plateau: then none is detected within the sizes tried"
)


def detect_plateau(sizes: Sequence[int], values: Sequence[Sequence[float]], *, z: float = 2.0,
                   floor: float = 0.005) -> int | None:
    """The plateau size of a curve (see ``PLATEAU_METHOD``), or None when the curve still moves at the end.

    ``values[i]`` holds the metric for each seed at ``sizes[i]``; NaNs are ignored.
    """
    order = np.argsort(sizes)
    sizes = [int(sizes[i]) for i in order]
    vals = [np.asarray(values[i], dtype=float) for i in order]
    vals = [v[np.isfinite(v)] for v in vals]
    if len(sizes) < 2 or any(len(v) == 0 for v in vals):
        return None
    last = vals[-1]

    def within(v: np.ndarray) -> bool:
        var = (v.var(ddof=1) / len(v) if len(v) > 1 else 0.0) + (last.var(ddof=1) / len(last) if len(last) > 1
                                                                 else 0.0)
        return abs(v.mean() - last.mean()) <= z * max(np.sqrt(var), floor)

    plateau = None
    for i in range(len(sizes) - 2, -1, -1):  # walk down from the largest size while the curve stays close
        if not within(vals[i]):
            break
        plateau = sizes[i]
    return plateau
