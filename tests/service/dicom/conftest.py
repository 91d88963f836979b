from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.dicom.pipeline import PreparedSeries, prepare
from service.dicom.series import SeriesChoice
from service.dicom.sources import SeriesLimits
from service.runtime.manifest import Manifest
from tests.conftest import DEFAULT_STORE, DEFAULT_VERSION
from tests.service.dicom.builders import small_chest, world_centers, write

LIMITS = SeriesLimits(max_files=512, max_bytes=64 << 20, max_zip_entries=600, max_nodules=8, max_region_voxels=64 << 20)
SPEC = Manifest.read(DEFAULT_STORE / "res_mtnet" / DEFAULT_VERSION).preprocessing


def run(
    files: list[bytes] | list[Path], centers, choice: SeriesChoice | None = None, limits: SeriesLimits = LIMITS
) -> PreparedSeries:
    """The whole series preparation, as the route runs it, on files or paths."""
    data = [memoryview(f.read_bytes() if isinstance(f, Path) else f) for f in files]
    text = centers if isinstance(centers, str) else json.dumps(centers)
    return prepare(data, text, choice or SeriesChoice(), SPEC, limits)


@pytest.fixture(scope="session")
def phantom():
    return small_chest(0)


@pytest.fixture(scope="session")
def series_paths(phantom, tmp_path_factory) -> list[Path]:
    """The phantom's files in slice order, feet to head (their names are random)."""
    return write(phantom, tmp_path_factory.mktemp("series"))


@pytest.fixture(scope="session")
def series_dir(series_paths) -> Path:
    return series_paths[0].parent


@pytest.fixture(scope="session")
def base(phantom, series_paths) -> PreparedSeries:
    return run(series_paths, world_centers(phantom))
