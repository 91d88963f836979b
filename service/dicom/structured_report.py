"""The answer to a CT upload as a DICOM Comprehensive 3D SR (TID 1500 Measurement Report), built with highdicom:
one volumetric group (TID 1411) per nodule with its centre (a 3-D point in the series' frame of reference), mean
diameter (axial), a part-solid nodule's solid component, volume, the mean diameter in the largest section that the
Lung-RADS category rests on, the calibrated probability that readers rate it malignant (and Brock's probability of
cancer, when computed), type and Lung-RADS category, and the answer's caveats as text; the model is the observer
device. Of the upload's patient and study modules, what DICOM requires is copied (names, IDs, birth date, sex, study
date and numbers); nothing of them is logged. Nothing else of the source's header is carried over (see REFERENCES).
Research use: the document is marked preliminary, unverified.
"""

from __future__ import annotations

import io
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from service.api.schemas import NOTICE
from service.dicom.headers import SliceHeader
from service.dicom.pipeline import SeriesSource
from service.errors import UnusableInput
from service.runtime.manifest import Manifest

SCHEME = "99RESMTNET"  # local codes (values of at most 16 characters), where DICOM has none for what we report
SERIES_NUMBER = 9901
PROBABILITY = codes.UCUM.NoUnits

TYPE_CODES = {
    "solid": hd.sr.CodedConcept("solid", SCHEME, "Solid nodule"),
    "part_solid": hd.sr.CodedConcept("part_solid", SCHEME, "Part-solid nodule"),
    "ground_glass": hd.sr.CodedConcept("ground_glass", SCHEME, "Non-solid (ground-glass) nodule"),
}
NODULE_TYPE = hd.sr.CodedConcept("nodule_type", SCHEME, "Nodule type")
LUNG_RADS = hd.sr.CodedConcept("lung_rads_v2022", SCHEME, "Lung-RADS v2022 category")
SUGGEST_4X = hd.sr.CodedConcept("suggest_4x", SCHEME, "Lung-RADS 4X review suggested")
YES, NO = codes.SCT.Yes, codes.SCT.No
BROCK = hd.sr.CodedConcept("brock_pancan_2b", SCHEME, "Brock (PanCan) full model with spiculation")
CALIBRATED = hd.sr.CodedConcept("calibrated", SCHEME, "Res-MTNet, calibrated")
# The model's malignancy is LIDC's label (at least two readers rated it above 3 of 5), not DICOM's "Probability of
# cancer", which Brock's is.
READERS_MALIGNANT = hd.sr.CodedConcept("lidc_malignant", SCHEME, "Probability readers rate it malignant (LIDC)")
NOTE = hd.sr.CodedConcept("reader_note", SCHEME, "Note for the reader")
SOLID_DIAMETER = hd.sr.CodedConcept("solid_diameter", SCHEME, "Diameter of the solid component")
LUNG_RADS_SIZE = hd.sr.CodedConcept("lung_rads_size", SCHEME, "Diameter in the largest section (Lung-RADS)")


# What the report carries of the source's header: the references it needs, and of the Patient and General Study
# modules what DICOM requires (type 1, 1C and 2) plus the issuer that qualifies the patient ID. The rest stays
# out: other names and IDs, ages, comments, the scanner and institution (where and when the patient was scanned).
REFERENCES = (
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "FrameOfReferenceUID",
)
WHEN_PRESENT = (
    "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "PatientIdentityRemoved",  # a de-identified source says so (type 3), and how (1C once it does)
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
)
TYPE_2 = (  # present, possibly empty
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def _base_header(source: SeriesSource) -> Dataset:
    """From the first slice's header, what the report carries for the whole series (see REFERENCES)."""
    first = source.slices[0]
    data = source.files[first.file]
    buffer = io.BytesIO(data if isinstance(data, bytes) else bytes(data))
    header = pydicom.dcmread(buffer, stop_before_pixels=True, force=True)
    base = Dataset()
    for keyword in (*REFERENCES, *WHEN_PRESENT, *TYPE_2):
        if keyword in header:
            base[keyword] = header[keyword]
        elif keyword in TYPE_2:
            setattr(base, keyword, "")
    return base


TEXT_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC"})  # decoded by the SpecificCharacterSet


def _check_decodable(header: Dataset) -> None:
    """Refuse a header whose text does not decode in its declared character set: pydicom would put replacement
    characters in its place, and the SR would carry a patient's name altered. The keyword is named, the value not."""
    for element in header.iterall():  # nested too: the issuer's qualifiers
        if element.VR in TEXT_VRS and "\ufffd" in str(element.value):
            raise UnusableInput(
                f"the series' {element.keyword or 'text element'} does not decode in its declared character set "
                "(SpecificCharacterSet): a DICOM SR would carry it altered; ask for JSON instead "
                "(Accept: application/json, or ?format=json)"
            )


def _evidence(base: Dataset, slices: list[SliceHeader]) -> list[Dataset]:
    """One reference per SOP instance of the series; the first is the full header, for the patient and study."""
    evidence, seen = [base], {base.SOPInstanceUID}
    for s in slices:
        if s.sop_instance in seen:
            continue
        seen.add(s.sop_instance)
        ref = Dataset()
        ref.SOPClassUID, ref.SOPInstanceUID = s.sop_class, s.sop_instance
        ref.SeriesInstanceUID, ref.StudyInstanceUID = s.series_uid, base.StudyInstanceUID
        evidence.append(ref)
    return evidence


def _device(manifest: Manifest) -> hd.sr.ObserverContext:
    return hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=[manifest.sha256]),
            name=manifest.name,
            manufacturer_name="Res-MTNet Serve",
            model_name=f"{manifest.name} {manifest.version}",
            serial_number=manifest.sha256[:16],
        ),
    )


def _measurements(nodule: dict[str, Any], algorithm: hd.sr.AlgorithmIdentification) -> list[hd.sr.Measurement]:
    m = nodule["measurements"]
    out = [
        hd.sr.Measurement(
            name=codes.SCT.Diameter,
            value=m["diameter_mm"],
            unit=codes.UCUM.Millimeter,
            derivation=codes.SCT.Mean,
            algorithm_id=algorithm,
        )
    ]
    if _most_probable_type(nodule) == "part_solid":  # what its Lung-RADS category rests on; others have none
        out.append(
            hd.sr.Measurement(
                name=SOLID_DIAMETER,
                value=m["solid_diameter_mm"],
                unit=codes.UCUM.Millimeter,
                derivation=codes.SCT.Mean,
                algorithm_id=algorithm,
            )
        )
    out += [
        hd.sr.Measurement(
            name=codes.SCT.Volume, value=m["volume_mm3"], unit=codes.UCUM.CubicMillimeter, algorithm_id=algorithm
        ),
        hd.sr.Measurement(
            name=READERS_MALIGNANT,
            value=nodule["malignancy"]["malignant"],
            unit=PROBABILITY,
            method=CALIBRATED,
            algorithm_id=algorithm,
        ),
    ]
    rads = nodule.get("lung_rads")
    if rads:  # the size the category rests on: the mean diameter in the section where the nodule is largest
        out.append(
            hd.sr.Measurement(
                name=LUNG_RADS_SIZE,
                value=rads["basis"]["diameter_mm"],
                unit=codes.UCUM.Millimeter,
                derivation=codes.SCT.Mean,
                algorithm_id=algorithm,
            )
        )
    if nodule.get("brock_probability") is not None:
        out.append(
            hd.sr.Measurement(
                name=codes.DCM.ProbabilityOfCancer, value=nodule["brock_probability"], unit=PROBABILITY, method=BROCK
            )
        )
    return out


def _most_probable_type(nodule: dict[str, Any]) -> str:
    """The type Lung-RADS assessed (from the unrounded probabilities); without it, the most probable shown."""
    rads = nodule.get("lung_rads")
    if rads:
        return rads["basis"]["nodule_type"]
    types = nodule["nodule_type"]
    return max(types, key=types.get)


class TextEvaluation(hd.sr.QualitativeEvaluation):
    """A qualitative evaluation in words (a TEXT item, where highdicom's are coded): one caveat of the answer."""

    def __init__(self, text: str) -> None:
        item = hd.sr.TextContentItem(name=NOTE, value=text, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
        super(hd.sr.QualitativeEvaluation, self).__init__([item])  # a Template of this one item, not a CODE one


def reader_notes(nodule: dict[str, Any]) -> list[str]:
    """What the JSON answer tells a reader beside the numbers, in the same words: the research-use notice, the
    Lung-RADS management, the alternative types' categories, the category's notes, what Brock's size and spiculation
    rest on, and the nodule's warnings."""
    notes = [NOTICE]
    rads = nodule.get("lung_rads")
    if rads:
        notes.append(f"Lung-RADS {rads['category']} ({rads['risk']}): {rads['management']}")
        for alt in rads["alternatives"]:
            kind = alt["nodule_type"].replace("_", "-")
            notes.append(f"if the nodule is {kind} (probability {alt['probability']:g}): category {alt['category']}")
        notes += rads["notes"]
    brock = nodule.get("brock_inputs")
    if brock:
        notes.append(f"Brock size {brock['size_mm']:g} mm: {brock['size_definition']}")
        notes.append(f"Brock spiculation: {brock['spiculated']} (from the {brock['spiculated_from']})")
        if brock.get("spiculation_note"):
            notes.append(f"Brock spiculation: {brock['spiculation_note']}")
    return notes + nodule["warnings"]


def _evaluations(nodule: dict[str, Any]) -> list[hd.sr.QualitativeEvaluation]:
    out = [hd.sr.QualitativeEvaluation(NODULE_TYPE, TYPE_CODES[_most_probable_type(nodule)])]
    rads = nodule.get("lung_rads")
    if rads:
        category = rads["category"]
        value = hd.sr.CodedConcept(f"lung_rads_{category}", SCHEME, f"Lung-RADS {category}")
        out.append(hd.sr.QualitativeEvaluation(LUNG_RADS, value))
        out.append(hd.sr.QualitativeEvaluation(SUGGEST_4X, YES if rads["suggest_4x_review"] else NO))
    return out + [TextEvaluation(text) for text in reader_notes(nodule)]


def _group(
    n: int, nodule: dict[str, Any], frame_of_reference: str, series_uid: str, algorithm: hd.sr.AlgorithmIdentification
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    c = nodule["center"]
    centre = hd.sr.VolumeSurface(
        graphic_type=hd.sr.GraphicTypeValues3D.POINT,
        graphic_data=np.array([[c["x"], c["y"], c["z"]]], dtype=np.float64),
        frame_of_reference_uid=frame_of_reference,
        source_series=hd.sr.SourceSeriesForSegmentation(series_uid),
    )
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(identifier=f"nodule {n + 1}", uid=generate_uid()),
        referenced_volume_surface=centre,
        finding_type=codes.SCT.Nodule,
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.Lung)],
        algorithm_id=algorithm,
        measurements=_measurements(nodule, algorithm),
        qualitative_evaluations=_evaluations(nodule),
    )


def _build(source: SeriesSource, nodules: list[dict[str, Any]], manifest: Manifest) -> bytes:
    base = _base_header(source)
    _check_decodable(base)
    frame_of_reference = base.get("FrameOfReferenceUID")
    if not frame_of_reference:
        raise UnusableInput("the series has no FrameOfReferenceUID: a DICOM SR cannot place the nodules in it")
    algorithm = hd.sr.AlgorithmIdentification(name=manifest.name, version=manifest.version)
    series_uid = source.slices[0].series_uid
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=_device(manifest)),
        procedure_reported=codes.LN.CTChestReport,
        imaging_measurements=[
            _group(n, nodule, frame_of_reference, series_uid, algorithm) for n, nodule in enumerate(nodules)
        ],
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=_evidence(base, source.slices),
        content=report,
        series_instance_uid=generate_uid(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="Res-MTNet Serve",
        is_complete=True,
        series_description=f"{manifest.name} {manifest.version}: research use only",
        coding_schemes=[
            CodingSchemeIdentificationItem(
                designator=SCHEME,
                name="Res-MTNet Serve local codes",
                responsible_organization="Res-MTNet Serve",
            )
        ],
    )
    out = io.BytesIO()
    sr.save_as(out, enforce_file_format=True)
    return out.getvalue()


def build_report(source: SeriesSource, nodules: list[dict[str, Any]], manifest: Manifest) -> bytes:
    """The SR file's bytes. A header highdicom cannot copy becomes a 422 that quotes no value from it."""
    try:
        return _build(source, nodules, manifest)
    except UnusableInput:
        raise
    except Exception as exc:  # noqa: BLE001 - pydicom and highdicom errors may quote patient values
        raise UnusableInput(
            f"the series' headers could not be carried into a DICOM SR ({type(exc).__name__}); "
            "ask for JSON instead (Accept: application/json, or ?format=json)"
        ) from None
