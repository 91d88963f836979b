"""Response and request shapes, for the OpenAPI document and for clients. The route builds plain dicts with
exactly these fields (validated in tests), so the hot path does not pay for model validation."""

from __future__ import annotations

from pydantic import BaseModel, Field

NOTICE = (
    "Research use only. Not a medical device and not a diagnosis: results support, and never replace, the "
    "judgement of a qualified clinician."
)


class ModelRef(BaseModel):
    name: str
    version: str
    sha256: str


class Center(BaseModel):
    """The patch centre used, as voxel indices of the input: i column (x), j row (y), k slice (z)."""

    i: float
    j: float
    k: float


class SeriesCenter(Center):
    """For a CT series: the centre used as voxel indices of the sorted series and in world mm (patient LPS)."""

    x: float
    y: float
    z: float


class NoduleResult(BaseModel):
    center: SeriesCenter | Center = Field(union_mode="left_to_right")
    malignancy: dict[str, float] = Field(description="probability per label (benign, malignant)")
    nodule_type: dict[str, float] = Field(description="probability per label (solid, part_solid, ground_glass)")
    measurements: dict[str, float] = Field(description="diameter_mm, volume_mm3, solid_diameter_mm")
    attributes: dict[str, float] = Field(description="LIDC radiologist-style scores, 1..5")
    warnings: list[str]


class Timings(BaseModel):
    preprocess: float
    queue: float
    inference: float
    total: float


class Orientation(BaseModel):
    label: str = Field(description="axial, coronal, sagittal or oblique")
    row: list[float] = Field(description="direction of increasing column index i (LPS)")
    column: list[float] = Field(description="direction of increasing row index j (LPS)")
    normal: list[float] = Field(description="direction of increasing slice index k (LPS)")


class SeriesInfo(BaseModel):
    """Geometry of the CT series used; nothing that identifies a patient, study or series."""

    index: int = Field(description="the series used, numbered in the order its first file appears in the upload")
    series_in_upload: int
    slices: int
    rows: int
    columns: int
    spacing_mm: list[float] = Field(description="(z, y, x): median slice step, row spacing, column spacing")
    slice_step_range_mm: list[float]
    uniform_spacing: bool
    slice_thickness_mm: float | None
    orientation: Orientation
    multi_frame: bool
    transfer_syntax: str
    warnings: list[str]


class PredictResponse(BaseModel):
    request_id: str
    model: ModelRef
    series: SeriesInfo | None = Field(None, description="for a CT series upload: the series used")
    nodules: list[NoduleResult]
    units: dict[str, dict[str, str]] = Field(description="unit of every measurement, by output and label")
    timings_ms: Timings
    notice: str


class JsonPatchRequest(BaseModel):
    """application/json body for small clients."""

    patch: list[list[list[float]]] = Field(description="HU values, axes (z, y, x)")
    spacing: list[float] = Field(min_length=3, max_length=3, description="voxel spacing (z, y, x) in mm")
    center: Center | None = None


class MultipartPatchRequest(BaseModel):
    """multipart/form-data body."""

    patch: bytes = Field(json_schema_extra={"format": "binary"}, description=".npy file of HU values (z, y, x)")
    spacing: str = Field(description="voxel spacing 'z,y,x' in mm, e.g. '1.25,0.7,0.7'")
    center: str | None = Field(None, description='optional JSON {"i": .., "j": .., "k": ..}; default the middle')


class MultipartSeriesRequest(BaseModel):
    """multipart/form-data body for a CT series."""

    series: list[bytes] = Field(
        json_schema_extra={"items": {"type": "string", "format": "binary"}},
        description="the DICOM files of one series (any order), or one .zip of them",
    )
    centers: str = Field(
        description='JSON array of nodule centres: {"x", "y", "z"} world mm (patient LPS) or {"i", "j", "k"} voxel '
        "indices (column, row, slice in the series sorted along its normal)"
    )
    series_index: int | None = Field(None, description="which series, when the upload holds several (0-based)")
    series_uid: str | None = Field(None, description="or which series by SeriesInstanceUID (never echoed back)")


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
