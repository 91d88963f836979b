"""A CT upload to model inputs: files -> headers -> one sorted series -> for each nodule, the few slices around it
decoded and resampled to the model's cube with the single copy of preprocessing (service.imaging.preprocess)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from service.cancel import Stop
from service.dicom import centers as centres
from service.dicom.deflated import inflate_deflated
from service.dicom.elements import ElementScan
from service.dicom.geometry import SeriesGeometry
from service.dicom.headers import SliceHeader, read_headers
from service.dicom.pixels import SliceReader
from service.dicom.series import Series, SeriesChoice, assemble
from service.dicom.sources import SeriesLimits, collect
from service.errors import Overloaded, PayloadTooLarge, UnusableInput
from service.imaging.formats import CT_RANGE_HU, MIN_HU_SPREAD, check_ct_range
from service.imaging.preprocess import fractional_indices, lowpass_sigmas, resample_at, sheared_support, window
from service.runtime.manifest import Preprocessing

GAP_FACTOR = 2.5  # a step between slices this many times the series' median is a gap
NOT_IMAGED_MM = 5.0  # a centre in a gap wider than this (and than GAP_FACTOR median steps) is not imaged


@dataclass
class PreparedNodule:
    cube: np.ndarray  # (D, D, D) float32, windowed: the model's input
    center: dict[str, float]
    warnings: list[str]


@dataclass
class SeriesSource:
    """What a DICOM SR answer references: the uploaded files and the chosen series' slices (index into files)."""

    files: list[bytes | memoryview]
    slices: list[SliceHeader]


@dataclass
class PreparedSeries:
    nodules: list[PreparedNodule]
    series: dict
    decoded_slices: int
    source: SeriesSource | None = None  # kept only for a DICOM SR answer


def prepare(
    series_parts: list[memoryview],
    centers_text: str | None,
    choice: SeriesChoice,
    spec: Preprocessing,
    limits: SeriesLimits,
    scan: ElementScan | None = None,
    keep_source: bool = False,
    stop: Stop | None = None,
) -> PreparedSeries:
    """Everything a series request needs before the model; raises the service's typed errors. `stop` is checked
    between the steps, before each file is inflated or its header read, and before each slice is decoded (a request
    given up or past its deadline ends there)."""
    check = stop.check if stop is not None else _carry_on
    requested = centres.parse_centers(centers_text, limits.max_nodules)
    upload = collect(series_parts, limits)
    check()
    upload.files = inflate_deflated(upload.files, limits.max_bytes, check)
    headers = read_headers(upload.files, scan, max_images=limits.max_files, check=check)
    if len(headers) > limits.max_files:
        raise PayloadTooLarge(f"the upload holds {len(headers)} images (files or frames); at most {limits.max_files}")
    check()
    series = assemble(headers, choice, spec.field_of_view_mm)
    series.warnings[:0] = upload.notes
    located = [centres.locate(n, system, values, series.geometry) for n, (system, values) in enumerate(requested)]
    reader = SliceReader(
        upload.files, series.slices, spec.fill_hu, before_decode=check, max_decoded_bytes=limits.max_decoded_bytes
    )
    try:
        nodules = []
        for n, center in enumerate(located):
            nodules.append(_nodule(n, center, series, reader, spec, limits.max_region_voxels))
            reader.release()
    except MemoryError:  # what the limits let through still did not fit next to everything else running
        raise Overloaded(
            "the server has not the memory to read this series now; retry later, or send fewer nodules",
            headers={"Retry-After": "5"},
        ) from None
    source = SeriesSource(upload.files, series.slices) if keep_source else None
    return PreparedSeries(nodules, series.summary(), reader.decoded_slices, source)


def _carry_on() -> None:
    """The check of a preparation nobody can give up."""


def _nodule(
    n: int, center: centres.Center, series: Series, reader: SliceReader, spec: Preprocessing, max_region_voxels: int
) -> PreparedNodule:
    """The model's cube around one centre: sample positions along the normal at the true slice positions, in-plane
    on the pixel grid (each slice's own, shifted, with a gantry tilt); only the slices, rows and columns the
    resampling reads are decoded."""
    geo = series.geometry
    offsets = (np.arange(spec.patch_size) - (spec.patch_size - 1) / 2.0) * spec.spacing_mm
    i, j, k = (float(v) for v in center.voxel)
    along = geo.slice_position(k)
    _check_imaged(n, along, geo)
    positions = [
        fractional_indices(along + offsets, geo.slice_mm),
        j + offsets / geo.row_spacing,
        i + offsets / geo.column_spacing,
    ]
    shifts = None
    if np.any(geo.drift):  # (i, j) are in the frame of a slice at the centre; slice m's frame is offset from it
        shifts = np.outer(along - geo.slice_mm, geo.drift_pixels)
    sigmas = lowpass_sigmas(geo.spacing_zyx, spec)
    support = sheared_support(positions, sigmas, (geo.slices, geo.rows, geo.columns), shifts)
    extent = [last - first for first, last in support]
    if math.prod(extent) > max_region_voxels:
        raise PayloadTooLarge(
            f"centers[{n}]: the model's {spec.field_of_view_mm:g} mm around this nodule span "
            f"{' x '.join(map(str, extent))} voxels of the series; at most {max_region_voxels} are read per "
            "nodule (RESMTNET_MAX_PATCH_VOXELS): send the series at a coarser spacing"
        )
    gap = float(np.diff(geo.slice_mm[support[0][0] : support[0][1]]).max(initial=0.0))
    gap_note = ""
    if gap > GAP_FACTOR * geo.slice_step:
        gap_note = f", or missing slices: the patch spans a gap of {gap:g} mm (median step {geo.slice_step:g} mm)"
    region, padded = reader.region(*support)
    hounsfield = _check_hounsfield(n, region, spec.fill_hu, gap_note)
    local = [pos - first for pos, (first, _) in zip(positions, support, strict=True)]
    local_shifts = None if shifts is None else shifts[support[0][0] : support[0][1]]
    cube, covered = resample_at(region, local, sigmas, spec, local_shifts)
    warnings = list(series.warnings)
    if covered < 0.999:
        warnings.append(
            f"the series covers {math.floor(covered * 100)}% of the model's {spec.field_of_view_mm:g} mm field of view "
            f"around this nodule; the rest was filled with {spec.fill_hu:g} HU"
        )
    if padded:
        warnings.append(
            f"the patch reaches outside the scanner's field of view (pixel padding), filled with {spec.fill_hu:g} HU"
        )
    if gap_note:
        warnings.append(
            f"slices {gap:g} mm apart lie within this nodule's patch (the series' step is {geo.slice_step:g} mm): "
            "the patch is interpolated across the gap"
        )
    warnings.extend(hounsfield)
    return PreparedNodule(window(cube, spec), center.as_dict(), warnings)


def _check_imaged(n: int, along: float, geo: SeriesGeometry) -> None:
    """Refuse a centre inside a gap between slices wider than NOT_IMAGED_MM and GAP_FACTOR median steps: the
    nodule is not imaged there, and interpolation across the gap would invent its extent."""
    m = int(np.searchsorted(geo.slice_mm, along, side="right")) - 1
    if not 0 <= m < geo.slices - 1 or along <= geo.slice_mm[m]:
        return
    width = float(geo.slice_mm[m + 1] - geo.slice_mm[m])
    if width > max(NOT_IMAGED_MM, GAP_FACTOR * geo.slice_step):
        raise UnusableInput(
            f"centers[{n}] lies in a gap of {width:g} mm between slices {m} and {m + 1} (median step "
            f"{geo.slice_step:g} mm): the nodule is not imaged there; send the series with its missing slices"
        )


def _check_hounsfield(n: int, region: np.ndarray, fill_hu: float, gap_note: str = "") -> list[str]:
    """Refuse values no CT holds in HU (a wrong RescaleSlope or RescaleIntercept); values below any HU but with
    real ones beside them are padding outside the scanner's field of view without a PixelPaddingValue (often
    -32768 or -3024 - 1024), filled like padding. Warnings for what was filled and where no lung is seen."""
    what = f"the series' values (after RescaleSlope and RescaleIntercept) around centers[{n}]"
    low, high = float(region.min()), float(region.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        raise UnusableInput(f"{what} overflow: RescaleSlope or RescaleIntercept is far outside any CT's")
    warnings = []
    if low < CT_RANGE_HU[0]:
        below = region < CT_RANGE_HU[0]
        if below.all():
            check_ct_range(low, high, what)
        region[below] = fill_hu
        warnings.append(
            f"{int(below.sum())} values below {CT_RANGE_HU[0]:g} HU around this nodule (padding outside the "
            f"scanner's field of view?) were filled with {fill_hu:g} HU"
        )
        low = float(region.min())
    high = float(region.max())
    check_ct_range(low, high, what)
    if high - low < MIN_HU_SPREAD:
        raise UnusableInput(
            f"{what} span {low:g}..{high:g}: less than {MIN_HU_SPREAD:g} HU, none of the contrast a chest CT shows "
            f"(blank images, or a RescaleSlope far too small{gap_note})"
        )
    if low > -500:
        warnings.append(
            f"no value below -500 HU around this nodule (lowest {low:g}): no lung here, or a wrong rescale intercept"
        )
    return warnings
