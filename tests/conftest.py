"""Shared fixtures: a small real Res-MTNet exported to ONNX in a temporary model store."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_STORE = REPO / "model_store"
DEFAULT_VERSION = "1.2.0"  # the committed default model
SHARED_DATA = REPO.parent / "shared" / "datasets"
TEST_VERSION = "0.0.1"


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model_store/res_mtnet/0.0.1: an untrained, narrow Res-MTNet, exported and verified like the real one."""
    import torch

    from training.defaults import PREPROCESSING
    from training.export import export_model
    from training.model import ResMTNet, ResMTNetConfig

    torch.manual_seed(0)
    store = tmp_path_factory.mktemp("store")
    model = ResMTNet(ResMTNetConfig(widths=[4, 8, 8], blocks=[1, 1, 1], head_hidden=8)).eval()
    export_model(model, store, TEST_VERSION, PREPROCESSING)
    return store


@pytest.fixture
def store_copy(tiny_store: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny store that a test may tamper with."""
    dest = tmp_path / "store"
    shutil.copytree(tiny_store, dest)
    return dest


@pytest.fixture
def hu_patch() -> np.ndarray:
    """A 40^3 lung patch (1 mm) with a 10 mm solid nodule in the middle, in HU."""
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:40, :40, :40] - 19.5
    patch = np.where(z**2 + y**2 + x**2 <= 25, 40.0, -850.0) + rng.normal(0, 20, (40, 40, 40))
    return patch.astype(np.float32)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "lidc_voi" / "train.npz").exists():
        pytest.skip("the shared LIDC data set is not beside the repository")
    return SHARED_DATA
