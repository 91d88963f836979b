"""Each class of unusable upload gets its precise 4xx, raised before anything reaches the model."""

from __future__ import annotations

import dataclasses
import io
import zipfile

import numpy as np
import pydicom
import pytest
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_dataset
from pydicom.uid import MRImageStorage, RLELossless

from service.dicom.pixels import SliceReader
from service.dicom.series import SeriesChoice
from service.dicom.sources import SeriesLimits, count_entries
from service.errors import MalformedInput, Overloaded, PayloadTooLarge, ProblemError, UnusableInput
from tests.service.dicom.builders import rewrite, small_chest, world_centers, write, zip_bytes
from tests.service.dicom.conftest import LIMITS, run


def refused(kind: type[ProblemError], fragment: str, *args, **kwargs) -> ProblemError:
    with pytest.raises(kind) as caught:
        run(*args, **kwargs)
    assert fragment in caught.value.detail, caught.value.detail
    return caught.value


def test_not_ct_is_refused(phantom, tmp_path):
    def change(ds, _):
        ds.Modality, ds.SOPClassUID = "MR", MRImageStorage

    paths = rewrite(write(phantom, tmp_path), change)
    refused(UnusableInput, "not CT", paths, world_centers(phantom))


def test_a_modality_outside_dicoms_defined_terms_is_never_echoed(phantom, tmp_path):
    paths = rewrite(write(phantom, tmp_path), lambda ds, _: setattr(ds, "Modality", "ZZSECRETMOD"))
    error = refused(UnusableInput, "not CT", paths, world_centers(phantom))
    assert "ZZSECRETMOD" not in error.detail and "CT Image Storage (40)" in error.detail


def test_a_single_frame_ct_image_declaring_several_frames_is_named(phantom, tmp_path):
    paths = write(phantom, tmp_path)
    rewrite(paths[3:4], lambda ds, _: setattr(ds, "NumberOfFrames", 2))
    refused(
        UnusableInput,
        "series file 4 is a CT Image, one frame per file, but declares NumberOfFrames 2",
        paths,
        world_centers(phantom),
    )


@pytest.mark.parametrize(
    ("keyword", "value", "fragment"),
    [
        ("SamplesPerPixel", 0, "SamplesPerPixel 0; CT images have 1"),
        ("SamplesPerPixel", 3, "SamplesPerPixel 3; CT images have 1"),
        ("BitsStored", 0, "BitsStored 0 is outside 1 to its BitsAllocated 16"),
        ("BitsStored", 17, "BitsStored 17 is outside 1 to its BitsAllocated 16"),
    ],
)
def test_pixel_descriptions_no_ct_has_are_refused_not_defaulted(phantom, tmp_path, keyword, value, fragment):
    paths = rewrite(write(phantom, tmp_path), lambda ds, _: setattr(ds, keyword, value))
    refused(UnusableInput, fragment, paths, world_centers(phantom))


@pytest.mark.parametrize(
    ("value", "shown"), [("PALETTE COLOR", "PALETTE COLOR"), ("ZZSECRETPHOTO", "not a term DICOM defines")]
)
def test_images_that_are_not_grey_values_are_refused(phantom, tmp_path, value, shown):
    """A palette or colour image is not HU, whatever its rescale says; only DICOM's own terms are quoted."""
    paths = rewrite(write(phantom, tmp_path), lambda ds, _: setattr(ds, "PhotometricInterpretation", value))
    error = refused(
        UnusableInput, f"not grey values (PhotometricInterpretation {shown})", paths, world_centers(phantom)
    )
    assert "ZZSECRETPHOTO" not in error.detail


@pytest.mark.parametrize(
    ("rescale", "fragment"),
    [
        ({"RescaleIntercept": "-10000000"}, "outside any CT range in HU"),
        ({"RescaleIntercept": "10000000"}, "outside any CT range in HU"),
        ({"RescaleSlope": "1e300"}, "overflow"),
        ({"RescaleSlope": "0"}, "RescaleSlope 0 is not positive"),
        ({"RescaleSlope": "-1"}, "RescaleSlope -1 is not positive"),
        ({"RescaleSlope": "1e-30"}, "less than 100 HU, none of the contrast"),
        ({"RescaleIntercept": "-1024\\5"}, "RescaleIntercept holds 2 values; it has one"),
    ],
)
def test_a_rescale_that_cannot_give_hu_is_refused(phantom, tmp_path, rescale, fragment):
    """The same check as for patches: a 200 on such values would erase or invert the nodule."""
    paths = write(phantom, tmp_path, extra=rescale)
    refused(UnusableInput, fragment, paths, world_centers(phantom))


@pytest.mark.parametrize(("keep", "fragment"), [(400, "holds no image header"), (2000, "is truncated")])
def test_a_truncated_slice_is_named_not_ignored(phantom, tmp_path, keep, fragment):
    paths = write(phantom, tmp_path)
    paths[-1].write_bytes(paths[-1].read_bytes()[:keep])
    refused(MalformedInput, f"series file {len(paths)} {fragment}", paths, world_centers(phantom))


def test_missing_geometry_is_named(phantom, tmp_path):
    paths = write(phantom, tmp_path)
    rewrite(paths[5:7], lambda ds, _: delattr(ds, "ImagePositionPatient"))
    refused(UnusableInput, "ImagePositionPatient is absent from 2 of", paths, world_centers(phantom))


def test_inconsistent_rows_and_columns_are_refused(phantom, tmp_path):
    paths = write(phantom, tmp_path)

    def shrink(ds, _):
        ds.PixelData = np.ascontiguousarray(ds.pixel_array[:32]).tobytes()
        ds.Rows = 32

    rewrite(paths[:1], shrink)
    refused(UnusableInput, "inconsistent rows/columns", paths, world_centers(phantom))


def test_too_few_slices_to_cover_the_patch(phantom, series_paths):
    refused(UnusableInput, "too few slices to cover the patch", series_paths[:20], world_centers(phantom))


def test_coverage_is_read_from_the_slice_positions_not_the_median_step(phantom, tmp_path):
    """Two stacks interleaved 0.3 mm apart: most steps are 0.3 mm, but the slices span the whole series, and the
    patch is covered (slices x median step would say 24 mm)."""
    paths = write(phantom, tmp_path / "a")

    def shifted(ds, _):
        ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], float(ds.ImagePositionPatient[2]) + 0.3]
        ds.SOPInstanceUID = ds.SOPInstanceUID + ".9"

    others = rewrite(write(phantom, tmp_path / "b"), shifted)
    prepared = run(paths + others, world_centers(phantom))
    assert len(prepared.nodules) == len(world_centers(phantom))


@pytest.mark.parametrize(
    ("keyword", "meaning"), [("PixelData", "no pixel data"), ("BitsAllocated", "no BitsAllocated")]
)
def test_a_slice_without_pixels_or_their_size_is_named(phantom, tmp_path, keyword, meaning):
    paths = write(phantom, tmp_path)
    rewrite(paths[18:19], lambda ds, _: delattr(ds, keyword))
    refused(UnusableInput, f"has {meaning}: its pixels cannot be read", paths, world_centers(phantom))


def test_bare_datasets_without_file_meta_are_read(phantom, series_paths):
    """pydicom reads a dataset written without preamble or file meta; its pixels are decoded in the encoding it
    was read in."""
    bare = []
    for path in series_paths:
        ds = pydicom.dcmread(path)
        del ds.file_meta
        buffer = io.BytesIO()
        out = DicomFileLike(buffer)
        out.is_little_endian, out.is_implicit_VR = True, True
        write_dataset(out, ds)
        bare.append(buffer.getvalue())
    expected = run(series_paths, world_centers(phantom)).nodules[0].cube
    np.testing.assert_array_equal(run(bare, world_centers(phantom)).nodules[0].cube, expected)


def test_a_single_slice_is_refused(phantom, series_paths):
    refused(UnusableInput, "at least 2", series_paths[:1], world_centers(phantom))


def test_a_nodule_outside_the_volume_is_named_by_its_index(phantom, series_paths):
    centers = world_centers(phantom) + [{"x": 0.0, "y": 0.0, "z": 500.0}]
    refused(UnusableInput, "centers[1]", series_paths, centers)


@pytest.mark.parametrize(
    ("centers", "fragment"),
    [
        ("", "'centers' is required"),
        ("{", "not valid JSON"),
        ('{"x": 1, "y": 2, "z": 3}', "non-empty JSON array"),
        ("[]", "non-empty JSON array"),
        ('[{"x": 1, "y": 2}]', 'exactly "x", "y", "z"'),
        ('[{"i": 1, "j": 2, "k": true}]', "centers[0].k must be a finite number"),
    ],
)
def test_malformed_centers_are_refused(series_paths, centers, fragment):
    refused(UnusableInput, fragment, series_paths, centers)


def test_too_many_centers(series_paths):
    refused(PayloadTooLarge, "at most 8", series_paths, [{"i": 1, "j": 1, "k": 1}] * 9)


def test_two_images_at_one_position_are_refused(phantom, series_dir, tmp_path):
    other = write(phantom, tmp_path)  # the same positions, other SOP instances of the same series
    rewrite(other[:1], lambda ds, _: setattr(ds, "SOPInstanceUID", "1.2.3.4.5"))
    refused(UnusableInput, "share the slice position", list(series_dir.iterdir()) + other[:1], world_centers(phantom))


def test_several_series_are_listed_by_index_and_chosen(phantom, series_paths, base, tmp_path):
    other = small_chest(5)
    second = write(other, tmp_path, series_number=2)
    error = refused(UnusableInput, "holds 2 CT series", series_paths + second, world_centers(phantom))
    assert error.extra["series"] == [
        {"index": 0, "slices": 40, "rows": 64, "columns": 64, "orientation": "axial"},
        {"index": 1, "slices": 40, "rows": 64, "columns": 64, "orientation": "axial"},
    ]
    chosen = run(series_paths + second, world_centers(phantom), SeriesChoice(index=0))
    np.testing.assert_allclose(chosen.nodules[0].cube, base.nodules[0].cube, atol=1e-5)
    assert chosen.series["series_in_upload"] == 2
    from pydicom import dcmread

    uid = dcmread(second[0]).SeriesInstanceUID
    by_uid = run(series_paths + second, world_centers(other), SeriesChoice(uid=uid))
    assert by_uid.series["index"] == 1
    refused(UnusableInput, "series_index 2 does not exist", series_paths, world_centers(phantom), SeriesChoice(index=2))
    error = refused(UnusableInput, "given series_uid", series_paths, world_centers(phantom), SeriesChoice(uid="1.2.3"))
    assert "1.2.3" not in error.detail


def test_garbage_files_are_malformed(series_paths, phantom):
    refused(MalformedInput, "series file 41 is not a DICOM file", series_paths + [b"\0" * 10], world_centers(phantom))


def test_limits_on_files_and_bytes(series_paths, phantom):
    small = SeriesLimits(max_files=10, max_bytes=1 << 30, max_zip_entries=10, max_nodules=4, max_region_voxels=64 << 20)
    refused(PayloadTooLarge, "at most 10", series_paths, world_centers(phantom), limits=small)
    tight = SeriesLimits(
        max_files=100, max_bytes=100_000, max_zip_entries=100, max_nodules=4, max_region_voxels=64 << 20
    )
    refused(PayloadTooLarge, "at most 100000 are accepted", series_paths, world_centers(phantom), limits=tight)
    refused(PayloadTooLarge, "more than 10 entries", [zip_bytes(series_paths)], world_centers(phantom), limits=small)


def test_the_voxels_read_around_a_nodule_are_bounded_before_they_are_allocated(series_paths, phantom):
    """A few kilobytes of compressed slices at a tiny pixel spacing can ask for gigabytes around one nodule."""
    few = dataclasses.replace(LIMITS, max_region_voxels=1000)
    refused(
        PayloadTooLarge,
        "centers[0]: the model's 40 mm around this nodule span",
        series_paths,
        world_centers(phantom),
        limits=few,
    )


def test_pixels_decoded_from_compressed_slices_are_bounded_per_request(phantom, tmp_path):
    paths = write(phantom, tmp_path, transfer_syntax=RLELossless)
    rows, columns = (int(v) for v in pydicom.dcmread(paths[0]).pixel_array.shape)
    three_slices = dataclasses.replace(LIMITS, max_decoded_bytes=3 * rows * columns * 2)
    refused(PayloadTooLarge, "one nodule needs more than", paths, world_centers(phantom), limits=three_slices)
    (first,) = world_centers(phantom)
    centers = [first, {**first, "z": first["z"] + 6.0}]  # the second needs slices the first did not
    each = [run(paths, [c]).decoded_slices for c in centers]  # within the default budget
    both = run(paths, centers).decoded_slices
    assert min(each) > 3 and both == sum(each)  # what the first held was let go before the second
    # A budget for the larger nodule's slices takes both: each one's are let go before the next's.
    per_nodule = dataclasses.replace(LIMITS, max_decoded_bytes=max(each) * rows * columns * 2)
    assert len(run(paths, centers, limits=per_nodule).nodules) == 2


def test_running_out_of_memory_while_reading_is_a_503_to_retry(series_paths, phantom, monkeypatch):
    def exhausted(*_):
        raise MemoryError

    monkeypatch.setattr(SliceReader, "region", exhausted)
    error = refused(Overloaded, "not the memory to read this series now", series_paths, world_centers(phantom))
    assert error.status == 503 and error.headers["Retry-After"]


def test_a_zip_bomb_stops_at_its_compression_ratio_while_inflating(phantom):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.dcm", b"\0" * (200 << 20))  # 200 MiB of zeros: about 200 KiB compressed
    data = buf.getvalue()
    assert len(data) < 1 << 20
    refused(PayloadTooLarge, "times its compressed size", [data], world_centers(phantom))


def test_a_zip_stops_at_the_byte_limit_while_inflating(phantom):
    noise = np.random.default_rng(0).integers(0, 256, 8 << 20, dtype=np.uint8).tobytes()  # does not deflate
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.dcm", noise)
    small = SeriesLimits(
        max_files=512, max_bytes=4 << 20, max_zip_entries=600, max_nodules=8, max_region_voxels=64 << 20
    )
    refused(PayloadTooLarge, "uncompressed", [buf.getvalue()], world_centers(phantom), limits=small)


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_zip_methods_that_inflate_whole_blocks_are_refused_before_reading(phantom, method):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as archive:
        archive.writestr("a.dcm", b"\0" * (64 << 20))  # a few KB that would become 64 MiB in one read
    refused(UnusableInput, "use deflate", [buf.getvalue()], world_centers(phantom))


def test_zip_entries_are_counted_from_the_records_not_the_declared_count(series_paths):
    data = bytearray(zip_bytes(series_paths))
    eocd = data.rfind(b"PK\x05\x06")
    data[eocd + 8 : eocd + 12] = (1).to_bytes(2, "little") * 2  # claims one entry
    assert count_entries(bytes(data), limit=1000) == len(series_paths)
    with pytest.raises(PayloadTooLarge):
        count_entries(bytes(data), limit=5)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_zips_are_malformed(series_paths, phantom, damage):
    data = zip_bytes(series_paths[:3])
    data = data[: len(data) // 2] if damage == "truncate" else b"PK\x03\x04" + b"\x07" * 500
    refused(MalformedInput, ".zip is damaged", [data], world_centers(phantom))


def test_a_zip_and_files_together_are_refused(series_paths, phantom):
    refused(
        UnusableInput,
        "not several zips or a mix",
        [zip_bytes(series_paths[:2]), series_paths[0].read_bytes()],
        world_centers(phantom),
    )


def test_limits_default_admit_600_slices_of_512_squared():
    from service.config import Settings

    s = Settings()
    series_bytes = 600 * (512 * 512 * 2 + 4096)
    assert s.dicom_max_files >= 600 and s.dicom_max_bytes >= series_bytes and s.max_body_bytes >= series_bytes
    assert s.max_body_bytes <= 1 << 30
    assert LIMITS.max_nodules == 8


@pytest.mark.parametrize(
    ("keyword", "value"), [("PatientID", "QX-OTHER-PATIENT"), ("StudyInstanceUID", "1.2.826.0.1.3680043.8.498.77")]
)
def test_a_series_mixing_patients_or_studies_is_refused_without_naming_them(phantom, tmp_path, keyword, value):
    """Slices of another patient's study under the same series UID: the answer (and an SR filed under the first
    slice's patient) would mix two people."""
    paths = write(phantom, tmp_path)
    rewrite(paths[: len(paths) // 2], lambda ds, _: setattr(ds, keyword, value))
    error = refused(UnusableInput, "belong to more than one patient or study", paths, world_centers(phantom))
    assert value not in error.detail


def test_a_centre_giving_a_coordinate_twice_is_refused(series_paths):
    refused(
        UnusableInput, "'centers': the member 'x' is given twice", series_paths, '[{"x": 1, "y": 2, "z": 3, "x": 4}]'
    )


@pytest.mark.parametrize(
    ("keyword", "files", "count"),
    [("RescaleIntercept", slice(20, 21), 1), ("RescaleIntercept", slice(None), 40), ("RescaleSlope", slice(0, 3), 3)],
)
def test_a_missing_rescale_is_refused_not_taken_as_0_or_1(phantom, tmp_path, keyword, files, count):
    """Unsigned CT stored with intercept -1024: a slice without it taken as 0 would be 1024 HU too bright."""
    paths = write(phantom, tmp_path, signed=False)
    rewrite(paths[files], lambda ds, _: delattr(ds, keyword))
    refused(
        UnusableInput,
        f"missing rescale: {keyword} is absent from {count} of 40 images of the series",
        paths,
        world_centers(phantom),
    )


def test_an_enhanced_ct_without_its_pixel_value_transformation_is_refused(phantom, tmp_path):
    from tests.service.dicom.builders import enhanced_ct

    path = enhanced_ct(phantom, tmp_path / "mf.dcm")
    rewrite([path], lambda ds, _: delattr(ds.SharedFunctionalGroupsSequence[0], "PixelValueTransformationSequence"))
    refused(UnusableInput, "RescaleIntercept is absent from 40 of 40 images", [path], world_centers(phantom))


@pytest.mark.parametrize(
    ("sop_class", "shown"),
    [
        (MRImageStorage, "found Modality CT with SOP class MR Image Storage (40)"),
        ("1.2.826.0.1.3680043.8.498.999", "found Modality CT with an unknown SOP class (40)"),
    ],
)
def test_a_ct_modality_under_another_sop_class_says_so(phantom, tmp_path, sop_class, shown):
    paths = rewrite(write(phantom, tmp_path), lambda ds, _: setattr(ds, "SOPClassUID", sop_class))
    error = refused(UnusableInput, shown, paths, world_centers(phantom))
    assert "1.2.826" not in error.detail


@pytest.mark.parametrize("keyword", ["PatientID", "StudyInstanceUID", "SeriesInstanceUID"])
def test_an_identifier_missing_from_some_images_is_named_as_missing(phantom, tmp_path, keyword):
    """Not "two series" or "more than one patient": the element is missing, and no value is quoted."""
    paths = write(phantom, tmp_path)
    value = str(pydicom.dcmread(paths[0], stop_before_pixels=True)[keyword].value)
    rewrite(paths[7:8], lambda ds, _: delattr(ds, keyword))
    error = refused(UnusableInput, f"{keyword} is absent", paths, world_centers(phantom))
    assert "1 of 40" in error.detail and value not in error.detail


def test_a_nodule_centre_in_a_wide_gap_between_slices_is_refused(phantom, series_paths):
    """Seven slices missing around the nodule (at 10.4 mm along the normal): its extent would be invented by
    interpolation across 10 mm (the audit measured 5.5 mm for a 12 mm nodule), so it is not answered."""
    refused(
        UnusableInput,
        "centers[0] lies in a gap of 10 mm between slices 4 and 5 (median step 1.25 mm): the nodule is not imaged",
        series_paths[:5] + series_paths[12:],
        world_centers(phantom),
    )


def test_a_series_without_contrast_around_a_nodule_names_a_gap_in_its_patch(phantom, tmp_path):
    paths = write(phantom, tmp_path, extra={"RescaleSlope": "1e-30"})
    refused(
        UnusableInput,
        "or missing slices: the patch spans a gap of 3.75 mm (median step 1.25 mm)",
        paths[:9] + paths[11:],
        world_centers(phantom),
    )


def test_uncompressed_pixel_data_shorter_than_its_header_declares_names_both_sizes(phantom, tmp_path):
    paths = write(phantom, tmp_path)
    rewrite(paths[8:9], lambda ds, _: setattr(ds, "PixelData", ds.PixelData[:4096]))
    refused(
        UnusableInput,
        "series file 9: its pixel data holds 4096 bytes; the 64x64 pixels of 16 bits its header declares need 8192",
        paths,
        world_centers(phantom),
    )
