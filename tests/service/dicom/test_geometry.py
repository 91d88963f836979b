"""World <-> voxel mapping checked against an independent implementation: SimpleITK's ImageSeriesReader (GDCM)
on the same files, TransformPhysicalPointToContinuousIndex."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from service.dicom.headers import read_headers
from service.dicom.series import SeriesChoice, assemble
from tests.service.dicom.builders import flip_rows, rotate, small_chest, write

sitk = pytest.importorskip("SimpleITK")


def both(paths):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(paths[0].parent)))
    image = reader.Execute()
    series = assemble(read_headers([p.read_bytes() for p in paths]), SeriesChoice(), 40.0)
    return image, series.geometry


@pytest.mark.parametrize(
    "variant", ["head_first", "feet_first_flipped_columns", "descending_normal", "oblique", "anisotropic"]
)
def test_world_to_voxel_matches_simpleitk(variant, tmp_path):
    spacing = (2.5, 0.7, 0.7) if variant == "anisotropic" else (1.25, 0.8, 0.8)
    phantom = small_chest(2, shape=(24 if variant == "anisotropic" else 40, 64, 64), spacing=spacing, n_nodules=0)
    paths = write(phantom, tmp_path, feet_first=variant.startswith("feet"), flip_x=variant.startswith("feet"))
    if variant == "descending_normal":
        flip_rows(paths)
    if variant == "oblique":
        rotate(paths, degrees_x=25.0, degrees_z=-15.0)
    image, geo = both(paths)
    assert image.GetSize() == (geo.columns, geo.rows, geo.slices)
    np.testing.assert_allclose(image.GetSpacing(), geo.spacing_zyx[::-1], atol=1e-4)
    np.testing.assert_allclose(image.GetOrigin(), geo.origin, atol=1e-3)
    rng = np.random.default_rng(0)
    for _ in range(20):
        ijk = rng.uniform([0, 0, 0], [geo.columns - 1, geo.rows - 1, geo.slices - 1])
        world = np.array(image.TransformContinuousIndexToPhysicalPoint(ijk.tolist()))
        np.testing.assert_allclose(geo.world_to_voxel(world), ijk, atol=2e-3)
        np.testing.assert_allclose(
            image.TransformPhysicalPointToContinuousIndex(geo.voxel_to_world(ijk).tolist()), ijk, atol=2e-3
        )
    assert geo.orientation_label() == ("oblique" if variant == "oblique" else "axial")


@pytest.mark.parametrize("cosine", [0.003, 0.009])
def test_world_to_voxel_inverts_dicoms_mapping_for_slightly_non_orthogonal_cosines(cosine, tmp_path):
    """A column direction tilted towards the row direction (row . column = cosine, within the accepted 0.01): the
    point DICOM puts at pixel (i, j) of slice k maps back to (i, j, k), far from the origin too."""
    from tests.service.dicom.builders import rewrite

    phantom = small_chest(2, n_nodules=0)
    column = [cosine, float(np.sqrt(1 - cosine**2)), 0.0]
    paths = rewrite(write(phantom, tmp_path), lambda ds, _: setattr(ds, "ImageOrientationPatient", [1, 0, 0, *column]))
    geo = assemble(read_headers([p.read_bytes() for p in paths]), SeriesChoice(), 40.0).geometry
    first = pydicom.dcmread(paths[0], stop_before_pixels=True)
    spacing_rows, spacing_columns = (float(v) for v in first.PixelSpacing)
    for i, j, k in [(3.0, 60.0, 0), (48.0, 61.5, 17), (60.25, 2.0, 39)]:
        origin = np.array(pydicom.dcmread(paths[k], stop_before_pixels=True).ImagePositionPatient, dtype=float)
        world = origin + i * spacing_columns * np.array([1.0, 0, 0]) + j * spacing_rows * np.array(column)
        np.testing.assert_allclose(geo.world_to_voxel(world), [i, j, k], atol=1e-6)
        np.testing.assert_allclose(geo.voxel_to_world(np.array([i, j, k])), world, atol=1e-6)
