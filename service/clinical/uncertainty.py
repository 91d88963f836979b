"""Per-nodule uncertainty: the spread of P(malignant) over flipped and transposed copies of the model's input cube.

The cube is isotropic, so each view shows the same nodule; a model sure of its answer gives nearly the same
probability for all of them. Views are cheap numpy views (no copy); the batcher copies them into its batch.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import numpy as np

from service.batching import Batcher, Prediction, submit_all

MAX_VIEWS = 8
METHOD = "spread of calibrated P(malignant) over test-time flips and transposes of the input cube"


def _transpose_yx(c: np.ndarray) -> np.ndarray:
    return np.swapaxes(c, 1, 2)


# Axes (z, y, x). The identity comes first; the others mix in-plane flips, a transpose and the flip along z.
_VIEWS: tuple[Callable[[np.ndarray], np.ndarray], ...] = (
    lambda c: c,
    lambda c: c[::-1, :, ::-1],
    lambda c: _transpose_yx(c),
    lambda c: c[:, ::-1, :],
    lambda c: c[::-1],
    lambda c: _transpose_yx(c)[:, ::-1, ::-1],
    lambda c: c[:, ::-1, ::-1],
    lambda c: _transpose_yx(c)[::-1],
)


def extra_views(cube: np.ndarray, views: int) -> list[np.ndarray]:
    """The views beyond the identity (views - 1 of them) of a (D, D, D) cube."""
    if not 2 <= views <= MAX_VIEWS:
        raise ValueError(f"views must be 2..{MAX_VIEWS}")
    return [view(cube) for view in _VIEWS[1:views]]


def spread(probabilities: list[float]) -> dict[str, float | int | str]:
    """Summary of P(malignant) over the views, the identity first."""
    return {
        "method": METHOD,
        "views": len(probabilities),
        "std": round(statistics.pstdev(probabilities), 6),
        "min": round(min(probabilities), 6),
        "max": round(max(probabilities), 6),
        "mean": round(statistics.fmean(probabilities), 6),
    }


async def submit_with_views(
    batcher: Batcher, cube: np.ndarray, deadline: float, views: int
) -> tuple[Prediction, list[Prediction]]:
    """The cube and its extra views, submitted together so that they share a batch; views < 2: the cube alone."""
    if views < 2:
        return await batcher.submit(cube, deadline), []
    results = await submit_all(batcher, [cube, *extra_views(cube, views)], deadline)
    return results[0], list(results[1:])
