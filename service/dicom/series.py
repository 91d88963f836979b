"""From slice headers to one validated series: CT only, grouped by SeriesInstanceUID, the client's choice when there
are several, consistent sizes and geometry, sorted along the normal, duplicates resolved.

Series are named to the client by their index: 0, 1, ... in the order their first file appears in the upload.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from pydicom.uid import UID

from service.dicom import geometry
from service.dicom.geometry import SeriesGeometry
from service.dicom.headers import CT_CLASSES, IDENTIFIERS, RESCALE, SliceHeader
from service.errors import UnusableInput

MAX_THICKNESS_MM = 50.0  # a SliceThickness beyond this (or not above 0) is not one any CT reconstructs
MAX_MATRIX = 4096  # CT is 512 or 1024 pixels square; beyond, a decoder would allocate gigabytes per slice
GREY = frozenset({"", "MONOCHROME1", "MONOCHROME2"})  # "" : absent, as in some exports; read as MONOCHROME2
# DICOM's other defined terms (PS3.3 C.7.6.3.1.2), the only values of the element a refusal quotes.
PHOTOMETRIC_TERMS = frozenset(
    {
        "PALETTE COLOR",
        "RGB",
        "HSV",
        "ARGB",
        "CMYK",
        "YBR_FULL",
        "YBR_FULL_422",
        "YBR_PARTIAL_422",
        "YBR_PARTIAL_420",
        "YBR_ICT",
        "YBR_RCT",
        "XYB",
    }
)
GEOMETRY_FIELDS = {
    "rows": "Rows",
    "columns": "Columns",
    "pixel_spacing": "PixelSpacing",
    "orientation": "ImageOrientationPatient",
    "position": "ImagePositionPatient",
}
THICK_MM = 2.5
GAP_FACTOR = 1.5


@dataclass(frozen=True)
class SeriesChoice:
    """Which series to use when the upload holds several: by index, or by SeriesInstanceUID (never echoed)."""

    index: int | None = None
    uid: str | None = None


@dataclass
class Series:
    """The chosen series: slices sorted along the normal, its grid, and what lowers confidence."""

    slices: list[SliceHeader]
    geometry: SeriesGeometry
    index: int
    count: int  # CT series in the upload
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """Geometry only, for the response: nothing that identifies a patient, a study or a series."""
        g = self.geometry
        steps = g.steps
        thickness = _thicknesses(self.slices)
        return {
            "index": self.index,
            "series_in_upload": self.count,
            "slices": g.slices,
            "rows": g.rows,
            "columns": g.columns,
            "spacing_mm": [round(v, 4) for v in g.spacing_zyx],
            "slice_step_range_mm": [round(float(steps.min()), 4), round(float(steps.max()), 4)],
            "uniform_spacing": g.uniform,
            "slice_thickness_mm": round(float(np.median(thickness)), 4) if thickness else None,
            "orientation": {
                "label": g.orientation_label(),
                "row": [round(float(v), 5) for v in g.row_dir],
                "column": [round(float(v), 5) for v in g.col_dir],
                "normal": [round(float(v), 5) for v in g.normal],
            },
            "gantry_tilt_deg": round(g.tilt_degrees, 2),
            "multi_frame": self.slices[0].frame is not None,
            "transfer_syntax": _syntax_name(self.slices[0].transfer_syntax),
            "warnings": list(self.warnings),
        }


def assemble(headers: list[SliceHeader], choice: SeriesChoice, min_extent_mm: float) -> Series:
    """The series to predict on, validated; 422 with a precise reason otherwise."""
    notes: list[str] = []
    images = _ct_images(headers, notes)
    unlabelled = sum(not h.series_uid for h in images)
    if 0 < unlabelled < len(images):
        raise UnusableInput(
            f"SeriesInstanceUID is absent from {unlabelled} of {len(images)} CT images of the upload, which the "
            "others carry: which series those images belong to cannot be told"
        )
    groups: dict[str, list[SliceHeader]] = {}
    for h in images:
        groups.setdefault(h.series_uid, []).append(h)
    ordered = list(groups.values())
    index = _choose(ordered, choice)
    slices = ordered[index]
    _check_consistent(slices)
    slices, geo = _sort(slices, notes)
    _check_extent(geo, min_extent_mm)
    return Series(slices, geo, index, len(ordered), notes + _quality(slices, geo))


def describe(groups: list[list[SliceHeader]]) -> list[dict]:
    """Each series by index: slice count, image size and orientation (no UID, no description)."""
    out = []
    for n, slices in enumerate(groups):
        first = slices[0]
        label = "unknown"
        if first.orientation is not None:
            try:
                label = geometry.label(geometry.directions(first.orientation)[2])
            except UnusableInput:
                pass
        out.append(
            {"index": n, "slices": len(slices), "rows": first.rows, "columns": first.columns, "orientation": label}
        )
    return out


def _ct_images(headers: list[SliceHeader], notes: list[str]) -> list[SliceHeader]:
    if not headers:
        raise UnusableInput("the upload holds no images")
    ct: list[SliceHeader] = []
    other: Counter[str] = Counter()
    for h in headers:
        if h.modality == "CT" and (h.sop_class in CT_CLASSES or not h.sop_class):
            ct.append(h)
        else:
            other[_kind(h)] += 1
    if not ct:
        found = ", ".join(f"{kind} ({n})" for kind, n in other.most_common(5))
        raise UnusableInput(f"not CT: the upload holds no CT image (found {found}); send a CT series")
    if other:
        notes.append(f"{sum(other.values())} non-CT object(s) in the upload were ignored")
    localizers = [h for h in ct if h.localizer]
    if localizers:
        notes.append(f"{len(localizers)} localizer (scout) image(s) were ignored")
        ct = [h for h in ct if not h.localizer]
        if not ct:
            raise UnusableInput("the upload holds only localizer (scout) images; send the CT series itself")
    return ct


def _choose(groups: list[list[SliceHeader]], choice: SeriesChoice) -> int:
    listing = describe(groups)
    shown = "; ".join(
        f"{s['index']}: {s['slices']} images {s['rows']}x{s['columns']} {s['orientation']}" for s in listing[:20]
    )
    if choice.uid is not None:
        for n, slices in enumerate(groups):
            if slices[0].series_uid == choice.uid:
                return n
        raise UnusableInput(
            f"no CT series in the upload has the given series_uid; it holds {len(groups)}: {shown}", series=listing
        )
    if choice.index is not None:
        if not 0 <= choice.index < len(groups):
            raise UnusableInput(
                f"series_index {choice.index} does not exist; the upload holds {len(groups)} CT series: {shown}",
                series=listing,
            )
        return choice.index
    if len(groups) > 1:
        raise UnusableInput(
            f"the upload holds {len(groups)} CT series; choose one with series_index (or series_uid): {shown}",
            series=listing,
        )
    return 0


def _check_consistent(slices: list[SliceHeader]) -> None:
    for attr, keyword in GEOMETRY_FIELDS.items():
        missing = sum(getattr(s, attr) is None for s in slices)
        if missing:
            raise UnusableInput(
                f"missing geometry: {keyword} is absent from {missing} of {len(slices)} images of the series"
            )
    for keyword in RESCALE:
        missing = sum(keyword in s.absent for s in slices)
        if missing:
            raise UnusableInput(
                f"missing rescale: {keyword} is absent from {missing} of {len(slices)} images of the series (CT "
                "images must carry it: without it, their values cannot be read as HU)"
            )
    if len({s.subject for s in slices}) > 1:
        for keyword in IDENTIFIERS:
            missing = sum(keyword in s.absent for s in slices)
            if 0 < missing < len(slices):
                raise UnusableInput(
                    f"{keyword} is absent (or empty) in {missing} of {len(slices)} images of the series, which the "
                    "others carry: whether they are one patient's study cannot be told"
                )
        raise UnusableInput(
            "the series' images belong to more than one patient or study (their PatientID or StudyInstanceUID "
            "differ): upload one patient's series"
        )
    colour = {s.photometric for s in slices} - GREY
    if colour:
        shown = ", ".join(sorted(colour & PHOTOMETRIC_TERMS)) or "not a term DICOM defines"
        raise UnusableInput(
            f"the series' images are not grey values (PhotometricInterpretation {shown}); CT images are "
            "MONOCHROME2 (or MONOCHROME1)"
        )
    samples = {s.samples_per_pixel for s in slices} - {1}
    if samples:
        raise UnusableInput(
            f"the series' images have SamplesPerPixel {min(samples)}; CT images have 1 (grey values, not colour)"
        )
    for s in slices:
        if s.bits_stored is not None and not 1 <= s.bits_stored <= (s.bits_allocated or 16):
            raise UnusableInput(
                f"series file {s.file + 1}: BitsStored {s.bits_stored} is outside 1 to its BitsAllocated "
                f"{s.bits_allocated or 16}"
            )
    sizes = Counter((s.rows, s.columns) for s in slices)
    if len(sizes) > 1:
        shown = ", ".join(f"{r}x{c} in {n}" for (r, c), n in sizes.most_common(4))
        raise UnusableInput(f"inconsistent rows/columns across the series: {shown} images")
    rows, columns = next(iter(sizes))
    if not rows or not columns or rows < 2 or columns < 2:
        raise UnusableInput(f"the images are {rows}x{columns} pixels; a CT slice needs at least 2x2")
    if rows > MAX_MATRIX or columns > MAX_MATRIX:
        raise UnusableInput(f"the images are {rows}x{columns} pixels; at most {MAX_MATRIX}x{MAX_MATRIX} are accepted")
    first = slices[0]
    for s in slices:
        if not np.allclose(s.pixel_spacing, first.pixel_spacing, rtol=1e-3, atol=1e-4):  # type: ignore[arg-type]
            raise UnusableInput("inconsistent PixelSpacing across the series")
        if not np.allclose(s.orientation, first.orientation, atol=geometry.ORIENTATION_TOLERANCE):  # type: ignore
            raise UnusableInput("inconsistent ImageOrientationPatient across the series: slices of several stacks")
    spacing = first.pixel_spacing
    assert spacing is not None
    if not all(0.01 <= v <= 20 and math.isfinite(v) for v in spacing):
        raise UnusableInput(f"PixelSpacing {spacing[0]:g}\\{spacing[1]:g} mm is outside 0.01-20 mm")


def _sort(slices: list[SliceHeader], notes: list[str]) -> tuple[list[SliceHeader], SeriesGeometry]:
    """Slices in order along the normal; the same image sent twice is kept once, two images at one position are
    refused (several acquisitions mixed in one series)."""
    first = slices[0]
    assert first.orientation is not None and first.pixel_spacing is not None
    _, _, normal = geometry.directions(first.orientation)
    positions = np.array([s.position for s in slices], dtype=np.float64)
    order, along = geometry.sort_positions(positions, normal)
    keep = [0]  # indices into the sorted order
    dropped = 0
    for m in range(1, len(order)):
        if along[m] - along[keep[-1]] >= geometry.DUPLICATE_MM:
            keep.append(m)
            continue
        a, b = slices[order[keep[-1]]], slices[order[m]]
        if a.sop_instance and (a.sop_instance, a.frame) == (b.sop_instance, b.frame):
            dropped += 1
            continue
        raise UnusableInput(
            f"two different images share the slice position {along[m]:.2f} mm along the normal: the series mixes "
            "several acquisitions or reconstructions; send one stack"
        )
    if dropped:
        notes.append(f"{dropped} image(s) were sent more than once; each was used once")
    if len(keep) < 2:
        raise UnusableInput(f"too few slices: the series has {len(keep)}; a volume needs at least 2")
    chosen = order[keep]
    drift = geometry.fit_drift(positions[chosen], normal, first.pixel_spacing)
    geo = geometry.build(
        positions[chosen[0]],
        first.orientation,
        first.pixel_spacing,
        along[keep],
        first.rows or 0,
        first.columns or 0,
        drift,
    )
    return [slices[n] for n in chosen], geo


def _check_extent(geo: SeriesGeometry, min_extent_mm: float) -> None:
    if not geo.slice_step > 1e-3:  # a median step of 0: most slices share one position (or NaN from wild values)
        raise UnusableInput("the slices do not advance along the slice normal: their positions coincide")
    # From the slices' own positions (each covers a step around it): uneven steps are not counted as the median.
    covered = float(geo.slice_mm[-1] - geo.slice_mm[0]) + geo.slice_step
    if covered + 1e-6 < min_extent_mm:
        need = math.ceil(min_extent_mm / geo.slice_step)
        raise UnusableInput(
            f"too few slices to cover the patch: {geo.slices} slices, {geo.slice_step:g} mm apart (median), cover "
            f"{covered:g} mm along the slice normal; the model's patch spans {min_extent_mm:g} mm (send at least "
            f"{need} slices)"
        )
    for name, n, step in (("rows", geo.rows, geo.row_spacing), ("columns", geo.columns, geo.column_spacing)):
        if n * step + 1e-6 < min_extent_mm:
            raise UnusableInput(
                f"the images are too small: {n} {name} at {step:g} mm cover {n * step:g} mm; the model's patch "
                f"spans {min_extent_mm:g} mm"
            )


def _thicknesses(slices: list[SliceHeader]) -> list[float]:
    """The SliceThickness values that can be one (above 0, at most MAX_THICKNESS_MM); absent ones and others are not
    counted."""
    return [s.thickness for s in slices if s.thickness is not None and 0 < s.thickness <= MAX_THICKNESS_MM]


def _quality(slices: list[SliceHeader], geo: SeriesGeometry) -> list[str]:
    warnings = []
    step, steps = geo.slice_step, geo.steps
    if step > THICK_MM:
        warnings.append(f"slice spacing {step:g} mm is over {THICK_MM:g} mm: small nodules are measured less well")
    thickness = _thicknesses(slices)
    ignored = sum(s.thickness is not None for s in slices) - len(thickness)
    if ignored:
        warnings.append(
            f"SliceThickness of {ignored} image(s) is not a thickness (one number in (0, {MAX_THICKNESS_MM:g}] mm): "
            "left out of slice_thickness_mm"
        )
    if thickness and float(np.median(thickness)) > THICK_MM:
        warnings.append(
            f"slice thickness {float(np.median(thickness)):g} mm is over {THICK_MM:g} mm: small nodules are "
            "measured less well"
        )
    if not geo.uniform:
        warnings.append(
            f"slice spacing is not uniform ({steps.min():g} to {steps.max():g} mm): the patch was resampled at the "
            "true slice positions"
        )
    if geo.tilt_degrees > 0:
        warnings.append(
            f"gantry tilt of {geo.tilt_degrees:.1f} degrees: each slice was read at its own sideways offset; the "
            "patch's axes follow the image plane, which is tilted by that angle from the scanner's table axis"
        )
    gaps = np.flatnonzero(steps > GAP_FACTOR * step)
    if gaps.size:
        k = int(gaps[np.argmax(steps[gaps])])
        warnings.append(
            f"{gaps.size} gap(s) between slices, the widest {steps[k]:g} mm between slices {k} and {k + 1} "
            f"(median step {step:g} mm): missing slices?"
        )
    return warnings


# DICOM's defined terms for Modality (PS3.3 C.7.3.1.1.1) that an upload may hold beside CT: named in errors. Any
# other value is file content, never echoed.
MODALITIES = frozenset(
    "AR ASMT AU BDUS BI BMD CR CT DG DOC DX ECG EPS ES FID GM HC HD IO IOL IVOCT IVUS KER KO LEN LS MG MR M3D NM OAM "
    "OCT OP OPM OPT OPTBSV OPTENF OPV OSS OT PLAN PR PT PX REG RESP RF RG RTDOSE RTIMAGE RTPLAN RTRECORD RTSTRUCT "
    "RWV SEG SM SMR SR SRF STAIN TG US VA XA XC".split()
)


def _kind(h: SliceHeader) -> str:
    """What a non-CT object is, in words safe to echo: a defined Modality term, else its SOP class's name; both
    when the Modality says CT and the SOP class does not."""
    if h.modality == "CT":
        name = _syntax_name(h.sop_class)
        return f"Modality CT with SOP class {name}" if name != "unknown" else "Modality CT with an unknown SOP class"
    if h.modality in MODALITIES:
        return h.modality
    return _syntax_name(h.sop_class) or "unknown"


def _syntax_name(uid: str) -> str:
    if not uid:
        return ""
    name = UID(uid).name
    return name if name != uid else "unknown"
