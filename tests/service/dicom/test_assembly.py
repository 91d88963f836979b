"""Series assembly on real files: the same nodule gives the same model input whatever order, orientation, spacing,
encoding or packaging the scanner and the PACS chose."""

from __future__ import annotations

import json
import random
import time

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from service.cancel import GivenUp, Stop
from service.dicom.headers import read_headers
from service.dicom.pipeline import prepare
from service.dicom.pixels import SliceReader
from service.dicom.series import SeriesChoice, assemble
from service.errors import UnusableInput
from service.imaging.preprocess import preprocess
from tests.service.dicom.builders import (
    enhanced_ct,
    flip_rows,
    jpeg_lossless,
    rewrite,
    small_chest,
    world_centers,
    write,
    zip_bytes,
)
from tests.service.dicom.conftest import LIMITS, SPEC, run


def assert_same(a: np.ndarray, b: np.ndarray, atol: float = 5e-4) -> None:
    assert a.shape == b.shape == (SPEC.patch_size,) * 3
    np.testing.assert_allclose(a, b, atol=atol)


def test_series_cube_equals_the_patch_path_on_the_same_volume(phantom, base):
    """The DICOM path and a .npy patch of the same HU volume give the same model input (one preprocessing)."""
    (nodule,) = base.nodules
    c = nodule.center
    cube, _ = preprocess(phantom.hu.astype(np.float32), phantom.spacing, (c["k"], c["j"], c["i"]), SPEC)
    assert_same(nodule.cube, cube)
    ijk = phantom.world_to_voxel([c["x"], c["y"], c["z"]])
    np.testing.assert_allclose([c["i"], c["j"], c["k"]], ijk, atol=1e-3)
    assert base.series["slices"] == phantom.hu.shape[0]
    assert base.series["spacing_mm"] == list(phantom.spacing)
    assert base.series["orientation"]["label"] == "axial" and base.series["uniform_spacing"]


def test_shuffled_files_and_scrambled_instance_numbers_give_the_same_cube(phantom, series_dir, base, tmp_path):
    paths = write(phantom, tmp_path)
    order = list(range(len(paths)))
    random.Random(3).shuffle(order)
    rewrite(paths, lambda ds, k: setattr(ds, "InstanceNumber", order[k] + 1))
    shuffled = [paths[n] for n in order]
    assert_same(run(shuffled, world_centers(phantom)).nodules[0].cube, base.nodules[0].cube)


def test_feet_first_with_columns_right_to_left_gives_the_mirrored_cube(phantom, base, tmp_path):
    """Row direction (-1, 0, 0) turns the normal to the feet as well: the cube is mirrored along x and z."""
    paths = write(phantom, tmp_path, feet_first=True, flip_x=True)
    out = run(paths, world_centers(phantom))
    assert_same(out.nodules[0].cube[::-1, :, ::-1], base.nodules[0].cube)
    assert out.series["orientation"]["row"] == [-1.0, 0.0, 0.0]
    assert out.series["orientation"]["normal"] == [0.0, 0.0, -1.0]
    for key in "xyz":
        assert out.nodules[0].center[key] == pytest.approx(base.nodules[0].center[key], abs=1e-3)


def test_descending_slice_positions_sort_along_the_normal(phantom, base, tmp_path):
    """Rows stored posterior to anterior turn the normal to the feet: slice 0 is then the head end."""
    out = run(flip_rows(write(phantom, tmp_path)), world_centers(phantom))
    assert out.series["orientation"]["normal"] == [0.0, 0.0, -1.0]
    assert_same(out.nodules[0].cube[::-1, ::-1, :], base.nodules[0].cube)
    n = phantom.hu.shape[0]
    assert out.nodules[0].center["k"] == pytest.approx(n - 1 - base.nodules[0].center["k"], abs=1e-3)


@pytest.mark.parametrize("spacing", [(3.0, 0.7, 0.7), (0.8, 1.0, 1.0)])
def test_anisotropic_series_match_the_patch_path(spacing, tmp_path):
    p = small_chest(1, shape=(56 if spacing[0] < 2 else 24, 64, 64), spacing=spacing)
    out = run(write(p, tmp_path), world_centers(p))
    c = out.nodules[0].center
    cube, _ = preprocess(p.hu.astype(np.float32), p.spacing, (c["k"], c["j"], c["i"]), SPEC)
    assert_same(out.nodules[0].cube, cube)
    thick = any("over 2.5 mm" in w for w in out.nodules[0].warnings)
    assert thick == (spacing[0] > 2.5)


def test_non_uniform_spacing_is_resampled_at_the_true_slice_positions(phantom, base, tmp_path):
    """Slices missing here and there (steps of 1.25, 2.5 and 3.75 mm): the cube stays close to the complete
    series', and far closer than if the slices were taken as evenly spaced."""
    paths = write(phantom, tmp_path)
    k_nodule = int(round(base.nodules[0].center["k"]))
    drop = {k for k in range(1, len(paths) - 1) if k % 3 == 1 or k in (k_nodule - 4, k_nodule + 5)}
    kept = [path for k, path in enumerate(paths) if k not in drop]
    out = run(kept, world_centers(phantom))
    assert not out.series["uniform_spacing"]
    assert any("not uniform" in w for w in out.series["warnings"])
    error = np.abs(out.nodules[0].cube - base.nodules[0].cube).mean()
    assert error < 0.02
    nodule_slice = out.nodules[0].center["k"]
    assert nodule_slice < k_nodule  # fewer slices below the nodule: its index among the kept ones is lower


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless, "jpeg-lossless"])
def test_compressed_transfer_syntaxes_decode_to_the_same_cube(syntax, phantom, base, tmp_path):
    if syntax == "jpeg-lossless":
        paths, expected = jpeg_lossless(write(phantom, tmp_path)), "JPEG Lossless, Non-Hierarchical, First-Order"
    else:
        paths, expected = write(phantom, tmp_path, transfer_syntax=syntax), pydicom.uid.UID(syntax).name
    out = run(paths, world_centers(phantom))
    assert out.series["transfer_syntax"].startswith(expected)
    assert_same(out.nodules[0].cube, base.nodules[0].cube)


@pytest.mark.parametrize("syntax", [JPEGLSLossless, JPEG2000Lossless, "jpeg-lossless"])
def test_a_codestream_of_another_size_than_the_header_is_refused_before_decoding(syntax, phantom, tmp_path):
    """Decoders size their output from the codestream: a stream larger than Rows x Columns would be allocated
    whole, and its image is not the one the header describes."""
    if syntax == "jpeg-lossless":
        paths = jpeg_lossless(write(phantom, tmp_path))
    else:
        paths = write(phantom, tmp_path, transfer_syntax=syntax)
    rows, columns = (int(v) for v in phantom.hu.shape[1:])
    rewrite(paths, lambda ds, _: setattr(ds, "Rows", rows - 2))
    with pytest.raises(UnusableInput, match=f"compressed pixel data is {rows}x{columns}, not the {rows - 2}x{columns}"):
        run(paths, world_centers(phantom))


def test_only_the_slices_around_the_nodule_are_decoded(phantom, base):
    assert 0 < base.decoded_slices < phantom.hu.shape[0]
    assert base.decoded_slices <= SPEC.field_of_view_mm / phantom.spacing[0] + 8


@pytest.mark.parametrize("syntax", [None, RLELossless])
def test_enhanced_ct_multi_frame_gives_the_same_cube(syntax, phantom, base, tmp_path):
    path = enhanced_ct(phantom, tmp_path / "mf.dcm", **({"transfer_syntax": syntax} if syntax else {}))
    out = run([path], world_centers(phantom))
    assert out.series["multi_frame"] and out.series["slices"] == phantom.hu.shape[0]
    assert_same(out.nodules[0].cube, base.nodules[0].cube)
    assert out.decoded_slices < phantom.hu.shape[0]


def test_a_zip_gives_the_same_cube_and_other_entries_are_passed_over(phantom, series_paths, base):
    data = zip_bytes(series_paths, {"README.txt": b"not dicom", "DICOMDIR": b"\0" * 200})
    out = run([data], world_centers(phantom))
    assert_same(out.nodules[0].cube, base.nodules[0].cube)
    assert any("not DICOM" in w for w in out.series["warnings"])


def test_a_dicomdir_sent_among_the_files_is_passed_over(phantom, series_paths, base, tmp_path):
    """An exported folder sent file by file (the README's curl loop) holds a real DICOMDIR, whose class is only in
    its file meta."""
    from pydicom.fileset import FileSet

    files = FileSet()
    for path in series_paths[:3]:
        files.add(pydicom.dcmread(path))
    files.write(tmp_path / "export")
    out = run([*series_paths, tmp_path / "export" / "DICOMDIR"], world_centers(phantom))
    assert_same(out.nodules[0].cube, base.nodules[0].cube)


def test_padding_below_any_hu_without_a_pixel_padding_value_is_filled_as_air(phantom, tmp_path):
    """Scanners that store outside their circular field of view as -32768 without saying so (no
    PixelPaddingValue): those pixels become -1000 HU with a warning, as if they had been declared padding."""

    def outside_circle(value: int):
        def change(ds, _):
            pixels = ds.pixel_array.copy()
            rows, cols = np.mgrid[: pixels.shape[0], : pixels.shape[1]]
            pixels[(rows - 31.5) ** 2 + (cols - 31.5) ** 2 > 26.0**2] = value
            ds.PixelData = pixels.tobytes()

        return change

    padded = rewrite(write(phantom, tmp_path / "padded"), outside_circle(-32768))
    air = rewrite(write(phantom, tmp_path / "air"), outside_circle(-1000))
    centers = [{"i": 20, "j": 20, "k": 20}]  # near the circle's edge: its cube reaches the padding
    got, want = run(padded, centers), run(air, centers)
    assert_same(got.nodules[0].cube, want.nodules[0].cube)
    assert any("values below -4000 HU" in w for w in got.nodules[0].warnings)


def test_rescale_slope_and_intercept_give_hounsfield_units(phantom, base, tmp_path):
    """Pixels stored as (HU + 1024) / 2 with slope 2 and intercept -1024 (even HU only: compare loosely)."""

    def change(ds, _):
        stored = ((ds.pixel_array.astype(np.int32) + 1024) // 2).astype(np.uint16)
        ds.PixelRepresentation = 0
        ds.PixelData = stored.tobytes()
        ds.RescaleSlope, ds.RescaleIntercept = 2, -1024

    out = run(rewrite(write(phantom, tmp_path), change), world_centers(phantom))
    assert_same(out.nodules[0].cube, base.nodules[0].cube, atol=1.01 / 1400)


def test_padding_pixels_are_filled_and_warned(phantom, base, tmp_path):
    """The corners outside the scanner's circular field of view carry PixelPaddingValue: they become fill HU."""

    def change(ds, _):
        pixels = ds.pixel_array.copy()
        pixels[:, :6] = -2000
        ds.PixelData = pixels.tobytes()
        ds.add_new("PixelPaddingValue", "SS", -2000)

    c = base.nodules[0].center
    near_edge = [{"i": 10.0, "j": c["j"], "k": c["k"]}]
    out = run(rewrite(write(phantom, tmp_path), change), near_edge)
    assert out.nodules[0].cube.min() >= 0.0  # -1000 HU, the bottom of the window; never -2000
    assert any("pixel padding" in w for w in out.nodules[0].warnings)


def test_voxel_and_world_centres_agree(phantom, series_paths, base):
    c = base.nodules[0].center
    out = run(series_paths, [{"i": c["i"], "j": c["j"], "k": c["k"]}, {"x": c["x"], "y": c["y"], "z": c["z"]}])
    a, b = out.nodules
    assert a.center == pytest.approx(b.center, abs=1e-3)
    assert_same(a.cube, b.cube)


def test_the_same_file_twice_is_used_once(phantom, series_paths, base):
    out = run(series_paths + series_paths[:3], world_centers(phantom))
    assert any("more than once" in w for w in out.series["warnings"])
    assert_same(out.nodules[0].cube, base.nodules[0].cube)


def test_preparation_stops_at_its_next_check_once_given_up(phantom, series_paths):
    """Given up before it starts, nothing is decoded; given up between slices, no further slice is decoded."""
    data = [memoryview(p.read_bytes()) for p in series_paths]
    stop = Stop(time.perf_counter() + 60, "testing")
    stop.give_up()
    with pytest.raises(GivenUp):
        prepare(data, json.dumps(world_centers(phantom)), SeriesChoice(), SPEC, LIMITS, stop=stop)

    series = assemble(read_headers(data, None, max_images=LIMITS.max_files), SeriesChoice(), SPEC.field_of_view_mm)
    allowed = iter([None, None, None])

    def three_slices_then_stop() -> None:
        if next(allowed, "stop") == "stop":
            raise GivenUp()

    reader = SliceReader(data, series.slices, SPEC.fill_hu, before_decode=three_slices_then_stop)
    with pytest.raises(GivenUp):
        reader.region((0, 10), (0, 8), (0, 8))
    assert reader.decoded_slices == 3


def test_the_header_scan_stops_at_the_next_file_once_past_the_deadline(phantom, series_paths, monkeypatch):
    """The scan of every file's header is no single step: a request past its deadline (or given up) ends before the
    next file's header is read, not after all of them."""
    from service.dicom import headers
    from service.errors import DeadlineExceeded

    data = [memoryview(p.read_bytes()) for p in series_paths]
    parsed = []
    real = headers.read_elements

    def counted(view):
        parsed.append(len(view))
        return real(view)

    class ThreeFilesThenLate(Stop):
        def check(self) -> None:
            if len(parsed) >= 3:
                raise DeadlineExceeded("late")

    monkeypatch.setattr(headers, "read_elements", counted)
    with pytest.raises(DeadlineExceeded):
        prepare(data, json.dumps(world_centers(phantom)), SeriesChoice(), SPEC, LIMITS, stop=ThreeFilesThenLate(0, ""))
    assert len(parsed) == 3


@pytest.mark.parametrize("value", ["-5", "1e300", "0", "NaN", "inf", "1\\2"])
def test_a_slice_thickness_that_is_none_is_left_out_with_a_warning(phantom, tmp_path, value):
    paths = rewrite(write(phantom, tmp_path), lambda ds, _: setattr(ds, "SliceThickness", value))
    prepared = run(paths, world_centers(phantom))
    assert prepared.series["slice_thickness_mm"] is None
    assert any("SliceThickness of 40 image(s) is not a thickness" in w for w in prepared.nodules[0].warnings)


def test_a_gap_between_slices_within_a_nodules_patch_is_warned_of(phantom, series_paths, base):
    gap = [w for w in base.nodules[0].warnings if "interpolated across the gap" in w]
    assert not gap  # an even series
    middle = len(series_paths) // 2
    prepared = run(series_paths[: middle - 2] + series_paths[middle + 2 :], world_centers(phantom))
    assert any("6.25 mm apart lie within this nodule's patch" in w for w in prepared.nodules[0].warnings)


def test_a_nodule_centre_in_a_narrow_gap_is_answered_with_the_gap_warning(phantom, series_paths):
    """Two slices missing around the centre: 3.75 mm, under the 5 mm a nodule can hide in, interpolated."""
    prepared = run(series_paths[:9] + series_paths[11:], world_centers(phantom))
    assert any("3.75 mm apart lie within this nodule's patch" in w for w in prepared.nodules[0].warnings)
