import asyncio
import statistics
import time

import numpy as np
import pytest

from service.batching import Batcher
from service.clinical.calibration import calibrated_positive
from service.clinical.uncertainty import MAX_VIEWS, extra_views, spread, submit_with_views
from service.runtime.session import open_session
from service.runtime.store import resolve
from tests.conftest import DEFAULT_STORE, DEFAULT_VERSION
from training.data.phantoms import render_patch


def test_views_are_distinct_rearrangements_of_the_same_voxels():
    cube = np.random.default_rng(0).random((6, 6, 6)).astype(np.float32)
    views = extra_views(cube, MAX_VIEWS)
    assert len(views) == MAX_VIEWS - 1
    for v in views:
        assert v.shape == cube.shape and np.array_equal(np.sort(v, axis=None), np.sort(cube, axis=None))
    flat = [cube.tobytes()] + [np.ascontiguousarray(v).tobytes() for v in views]
    assert len(set(flat)) == MAX_VIEWS
    assert len(extra_views(cube, 2)) == 1
    with pytest.raises(ValueError):
        extra_views(cube, MAX_VIEWS + 1)


def test_spread_summarises_the_views():
    out = spread([0.2, 0.4, 0.3])
    assert out["views"] == 3 and out["min"] == 0.2 and out["max"] == 0.4 and out["mean"] == pytest.approx(0.3)
    assert out["std"] == pytest.approx(statistics.pstdev([0.2, 0.4, 0.3]), abs=1e-6)


@pytest.fixture(scope="module")
def model():
    return open_session(resolve(DEFAULT_STORE, "res_mtnet", DEFAULT_VERSION), "cpu", intra_op_threads=2, spinning=False)


def _spreads(model, cubes: list[np.ndarray]) -> tuple[list[float], list[int]]:
    """Std of calibrated P(malignant) over 8 views per cube, each cube's views submitted together to a batcher."""
    calibration = model.manifest.calibration

    async def go():
        batcher = Batcher(model.run, max_batch_size=8, max_delay_s=0.0, max_queue=64)
        batcher.start()
        try:
            out = []
            for cube in cubes:
                first, views = await submit_with_views(batcher, cube, time.perf_counter() + 30, 8)
                ps = [calibrated_positive(float(p.outputs[0][1]), calibration) for p in (first, *views)]
                out.append((statistics.pstdev(ps), max(p.batch_size for p in (first, *views))))
            return out
        finally:
            await batcher.stop()

    results = asyncio.run(go())
    return [s for s, _ in results], [b for _, b in results]


def test_uncertainty_is_higher_on_ambiguous_than_on_clear_cut_phantoms(model):
    """Clear-cut: 3-5 mm nodules, whose Brock truth is under 2% (the model agrees: P about 0.05). Ambiguous:
    12-20 mm nodules, whose Brock truth lies between about 6% and 46%: the label is close to a coin toss."""
    spec = model.manifest.preprocessing
    clear = [render_patch(40_000_000 + s, spec, (3.0, 5.0)).image for s in range(10)]
    ambiguous = [render_patch(40_000_000 + s, spec, (12.0, 20.0)).image for s in range(10)]
    clear_std, clear_batches = _spreads(model, clear)
    ambiguous_std, _ = _spreads(model, ambiguous)
    assert clear_batches == [8] * 10  # each cube's views shared one batch
    assert statistics.median(ambiguous_std) > 1.5 * statistics.median(clear_std)
    assert statistics.fmean(ambiguous_std) > statistics.fmean(clear_std)
