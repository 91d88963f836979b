"""Property-based fuzzing of the CT-upload readers: mutated valid DICOM files and zips, through the whole series
preparation (zip reading, header scan, assembly, decoding, resampling), may only raise the service's typed errors."""

from __future__ import annotations

import io
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.dicom.elements import ElementScan
from service.dicom.pipeline import prepare
from service.dicom.series import SeriesChoice
from service.errors import ProblemError
from tests.fuzz.test_readers import mutated
from tests.service.dicom.builders import small_chest, world_centers, write
from tests.service.dicom.conftest import LIMITS, SPEC

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    phantom = small_chest(0)
    files = [p.read_bytes() for p in write(phantom, tmp_path_factory.mktemp("fuzz"))]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for n, data in enumerate(files):
            archive.writestr(f"{n}.dcm", data)
    import json

    return files, buf.getvalue(), json.dumps(world_centers(phantom))


def _prepare(files: list[bytes], centers: str) -> None:
    scan = ElementScan()
    views = [memoryview(f) for f in files]
    for v in views:
        scan.length("series", v)  # what the multipart reader asks of each part
    prepare(views, centers, SeriesChoice(), SPEC, LIMITS, scan)


def test_mutated_slices_raise_only_typed_errors(valid):
    files, _, centers = valid

    @FUZZ
    @given(st.integers(0, len(files) - 1), st.data())
    def check(index: int, data) -> None:
        broken = list(files)
        broken[index] = data.draw(mutated(files[index]))
        try:
            _prepare(broken, centers)
        except ProblemError:
            pass

    check()


def test_mutated_zips_raise_only_typed_errors(valid):
    _, archive, centers = valid

    @FUZZ
    @given(mutated(archive))
    def check(data: bytes) -> None:
        try:
            _prepare([data], centers)
        except ProblemError:
            pass

    check()
