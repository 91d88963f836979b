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


class NoduleResult(BaseModel):
    center: Center
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


class PredictResponse(BaseModel):
    request_id: str
    model: ModelRef
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


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
