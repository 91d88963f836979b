"""CT uploads to the real server (uvicorn in its own process): files and zip over HTTP, limits while reading, and
no identifying value in anything the process writes, at debug level."""

from __future__ import annotations

import io
import json
import zipfile

import httpx
import pydicom
import pytest

from tests.e2e.servers import server_with_log
from tests.service.dicom.builders import form_files, small_chest, world_centers, write, zip_bytes

pytestmark = pytest.mark.slow

SECRETS = {"patient_name": "ROE^RICHARD^ZZ9", "patient_id": "ZZ9-PID-4411", "institution": "ZZ9 MERCY HOSPITAL"}


def test_ct_upload_over_http_and_nothing_identifying_in_the_process_output(tiny_store, tmp_path):
    phantom = small_chest(8)
    paths = write(phantom, tmp_path / "series", **SECRETS)
    header = pydicom.dcmread(paths[0], stop_before_pixels=True)
    secrets = [*SECRETS.values(), header.StudyInstanceUID, header.SeriesInstanceUID, header.SOPInstanceUID, "ZZ9"]
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.dcm", b"\0" * (8 << 20))
    # A one-part PatientName (highdicom warns, quoting it) and an unknown character set (pydicom warns and logs it).
    odd = write(
        phantom,
        tmp_path / "odd",
        patient_name="ZZ9MONONYM",
        extra={"SpecificCharacterSet": "ZZ9CHARSET", "PatientName": "ZZ9MONONYM"},
    )
    secrets += ["ZZ9MONONYM", "ZZ9CHARSET"]
    log = tmp_path / "server.log"
    centers = {"centers": json.dumps(world_centers(phantom))}
    with server_with_log(tiny_store, log, log_level="debug", dicom_max_bytes=str(4 << 20)) as url:
        files = httpx.post(f"{url}/predict", files=form_files(paths), data=centers, timeout=60)
        zipped = httpx.post(
            f"{url}/v1/predict", files=[("series", ("s.zip", zip_bytes(paths), "application/zip"))], data=centers
        )
        too_big = httpx.post(
            f"{url}/predict", files=[("series", ("b.zip", bomb.getvalue(), "application/zip"))], data=centers
        )
        outside = httpx.post(f"{url}/predict", files=form_files(paths), data={"centers": '[{"i": 1, "j": 1, "k": 99}]'})
        sr = httpx.post(
            f"{url}/predict", files=form_files(odd), data=centers, headers={"Accept": "application/dicom"}, timeout=60
        )
        metrics = httpx.get(f"{url}/metrics").text
    assert files.status_code == 200, files.text
    assert zipped.status_code == 200, zipped.text
    assert files.json()["nodules"][0]["center"] == pytest.approx(zipped.json()["nodules"][0]["center"])
    assert too_big.status_code == 413 and "compressed size" in too_big.json()["detail"]
    assert outside.status_code == 422 and "centers[0]" in outside.json()["detail"]
    assert sr.status_code in (200, 422), sr.text
    written = log.read_text(errors="replace")
    assert written.strip(), "the server wrote nothing at debug level"
    for secret in secrets:
        for where, text in (("log", written), ("metrics", metrics), *((r.url.path, r.text) for r in (files, zipped))):
            assert secret not in text, (secret, where)
