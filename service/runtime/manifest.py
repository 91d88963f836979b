"""The model manifest: the one schema that training writes and the service reads."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    """One graph input or output; -1 marks the dynamic batch axis. Labels (and units) name the entries of the axis
    after the batch axis: a head's classes or measurements, or a map's channels."""

    name: str
    dtype: Literal["float32"] = "float32"
    shape: list[int]
    labels: list[str] | None = None
    units: list[str] | None = None
    description: str = ""

    @model_validator(mode="after")
    def _labels_match_width(self) -> TensorSpec:
        width = self.shape[1] if len(self.shape) > 1 else self.shape[0]
        for field in ("labels", "units"):
            values = getattr(self, field)
            if values is not None and len(values) != width:
                raise ValueError(f"{self.name}: {len(values)} {field} for an axis of {width} after the batch axis")
        return self

    @property
    def per_label(self) -> bool:
        """One value per label in each row (a head's probabilities or measurements), as the JSON answer shows them;
        a map (the occupancy) is read by the service, not shown."""
        return self.labels is not None and len(self.shape) == 2


class Preprocessing(_Strict):
    """How a CT region becomes the model's input cube (see service.imaging.preprocess)."""

    patch_size: int = Field(gt=0, description="D: the input is a D^3 cube, axes z, y, x")
    spacing_mm: float = Field(gt=0, description="isotropic voxel spacing of the cube")
    hu_window: tuple[float, float] = Field(description="HU clipped to [low, high]")
    scaling: Literal["window_to_unit"] = "window_to_unit"
    fill_hu: float = Field(-1000.0, description="HU assumed outside the supplied volume")

    @model_validator(mode="after")
    def _window_ordered(self) -> Preprocessing:
        if self.hu_window[0] >= self.hu_window[1]:
            raise ValueError("hu_window must be (low, high) with low < high")
        return self

    @property
    def field_of_view_mm(self) -> float:
        return self.patch_size * self.spacing_mm


class Calibration(_Strict):
    """Temperature scaling of one two-label output, fitted after training and applied by the service, which keeps
    the raw probabilities beside the calibrated ones: p = sigmoid(logit(p_raw) / temperature)."""

    output: str = Field("malignancy", description="the calibrated output (two labels, softmax probabilities)")
    positive_label: str = Field("malignant", description="the label whose probability is p")
    method: Literal["temperature"] = "temperature"
    temperature: float = Field(gt=0, le=100)
    fitted_on: str = Field("", description="the data the temperature was fitted on")


class Manifest(_Strict):
    """Everything the service needs to trust and describe one exported model."""

    name: str
    version: str
    created: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    opset: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    preprocessing: Preprocessing
    training: dict[str, Any] = Field(default_factory=dict)
    evaluation: dict[str, Any] = Field(default_factory=dict)
    export: dict[str, Any] = Field(default_factory=dict)
    performance: dict[str, Any] = Field(default_factory=dict)
    calibration: Calibration | None = Field(None, description="absent: the service reports raw probabilities")

    @model_validator(mode="after")
    def _calibration_names_an_output(self) -> Manifest:
        c = self.calibration
        if c is None:
            return self
        spec = next((o for o in self.outputs if o.name == c.output), None)
        if spec is None or spec.shape[-1] != 2 or c.positive_label not in (spec.labels or []):
            raise ValueError(f"calibration: {c.output!r} must be a two-label output with label {c.positive_label!r}")
        return self

    def output(self, name: str) -> TensorSpec:
        for spec in self.outputs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def input(self) -> TensorSpec:
        return self.inputs[0]

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        return cls.model_validate_json((directory / MANIFEST_FILE).read_text())

    def write(self, directory: Path) -> Path:
        path = directory / MANIFEST_FILE
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")
        return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
