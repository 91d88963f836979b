"""Response and request shapes, for the OpenAPI document and for clients. The route builds plain dicts with
exactly these fields (validated in tests), so the hot path does not pay for model validation."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

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


class LungRadsBasis(BaseModel):
    nodule_type: str = Field(description="the model's most probable type")
    diameter_mm: float = Field(
        description="mean diameter in the section where the nodule is largest, rounded to one decimal"
    )
    solid_diameter_mm: float | None = Field(description="solid component, part-solid nodules only, likewise")
    plane: Literal["axial", "coronal", "sagittal"] = Field(
        description="the section the diameter was taken in (axial: the image plane of an axial acquisition)"
    )
    solid_plane: Literal["axial", "coronal", "sagittal"] | None = Field(
        description="the section the solid component was taken in, part-solid nodules only"
    )
    axial_diameter_mm: float = Field(description="the model's mean diameter on the axial section, one decimal")
    elongation: float | None = Field(
        description="longest / shortest axis of the predicted nodule; null when the map shows too little of it"
    )
    spiculation_score: float = Field(description="the model's LIDC spiculation score, 1-5")


class LungRadsAlternative(BaseModel):
    nodule_type: str
    probability: float
    category: str


class LungRads(BaseModel):
    """Lung-RADS v2022 baseline category from the model's type and sizes (decision support, not a report)."""

    version: str
    category: Literal["2", "3", "4A", "4B"]
    descriptor: str
    management: str
    risk: str = Field(description="probability of malignancy v2022 gives the category")
    rule: str = Field(description="the row of the ACR table that applied")
    basis: LungRadsBasis
    suggest_4x_review: bool = Field(description="category 3 or 4 and spiculation score >= spiculation_threshold")
    spiculation_threshold: float
    alternatives: list[LungRadsAlternative] = Field(description="other plausible types whose category differs")
    notes: list[str]
    not_assessed: list[str] = Field(description="what the rules need that the service cannot know")


class Uncertainty(BaseModel):
    method: str
    views: int
    std: float = Field(description="standard deviation of calibrated P(malignant) over the views")
    min: float
    max: float
    mean: float


class CalibrationRef(BaseModel):
    method: str
    temperature: float


class BrockInputs(BaseModel):
    size_mm: float
    size_definition: str
    nodule_type: str
    spiculated: bool
    spiculated_from: Literal["model", "clinical"] = Field(
        description="model: the model's spiculation score >= spiculation_threshold; clinical: clinical.spiculated"
    )
    spiculation_note: str | None = Field(description="how far the model's flag can be trusted; null for a reader's")
    spiculation_threshold: float
    age: float
    female: bool
    family_history: bool
    emphysema: bool
    nodule_count: int
    upper_lobe: bool


class ClinicalInputs(BaseModel):
    """What the Brock model needs about the patient; `upper_lobe` has one value per nodule centre, in order."""

    age: float = Field(ge=18, le=110)
    sex: Literal["female", "male"]
    family_history: bool = Field(description="lung cancer in a first-degree relative")
    emphysema: bool = Field(description="emphysema seen on CT")
    nodule_count: int = Field(ge=1, le=200, description="nodules seen on the CT")
    upper_lobe: bool | list[bool] = Field(description="per nodule centre: in an upper lobe")
    spiculated: bool | list[bool] | None = Field(
        None,
        description="optional, per nodule centre: a reader's judgement, which Brock and the 4X suggestion take over "
        "the model's flag",
    )


class NoduleResult(BaseModel):
    center: SeriesCenter | Center = Field(union_mode="left_to_right")
    malignancy: dict[str, float] = Field(
        description="calibrated probability per label (benign, malignant); malignant is the LIDC-IDRI readers' label "
        "(at least two radiologists rated malignancy above 3 of 5): their suspicion, not a biopsy result"
    )
    nodule_type: dict[str, float] = Field(description="probability per label (solid, part_solid, ground_glass)")
    measurements: dict[str, float] = Field(
        description="diameter_mm (axial section), volume_mm3, solid_diameter_mm (at most diameter_mm)"
    )
    attributes: dict[str, float] = Field(description="LIDC radiologist-style scores, 1..5")
    warnings: list[str]
    malignancy_raw: dict[str, float] | None = Field(None, description="the model's probabilities before calibration")
    malignancy_calibration: CalibrationRef | None = Field(None, description="how `malignancy` was calibrated")
    malignancy_uncertainty: Uncertainty | None = Field(None, description="with ?uncertainty=true (or always)")
    lung_rads: LungRads | None = None
    brock_probability: float | None = Field(None, description="Brock (PanCan) P(cancer), when `clinical` is sent")
    brock_inputs: BrockInputs | None = None


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
    gantry_tilt_deg: float = Field(description="angle between the slice normal and the line of the slice origins")
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
    clinical: ClinicalInputs | None = Field(None, description="patient factors for the Brock probability")


class MultipartPatchRequest(BaseModel):
    """multipart/form-data body."""

    model_config = ConfigDict(extra="forbid")

    patch: bytes = Field(json_schema_extra={"format": "binary"}, description=".npy file of HU values (z, y, x)")
    spacing: str = Field(description="voxel spacing 'z,y,x' in mm, e.g. '1.25,0.7,0.7'")
    center: str | None = Field(None, description='optional JSON {"i": .., "j": .., "k": ..}; default the middle')
    clinical: str | None = Field(None, description="optional JSON of ClinicalInputs, for the Brock probability")


class MultipartSeriesRequest(BaseModel):
    """multipart/form-data body for a CT series."""

    model_config = ConfigDict(extra="forbid")

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
    clinical: str | None = Field(None, description="optional JSON of ClinicalInputs; upper_lobe one per centre")


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
