"""A label volume of a DICOM series as a DICOM Segmentation (SEG) object, the form a PACS stores it in.

A SEG references the series' own images (each frame names the slice it lies on by its SOP Instance UID), so a
PACS or viewer (3D Slicer, OHIF, a radiology workstation) shows it over the very slices it was drawn on, with the
segment's name and codes. highdicom builds and checks the object; pydicom writes it.

The label is given in the voxel order :func:`clickadapt.volumes.dicom.read_dicom_series` reads the series in
(column, row, slice; slice ``k`` is ``series.files[k]``). Each class but background is one segment, coded with
SNOMED CT: a lesion as *Morphologically abnormal structure / Lesion*, any other class as *Tissue* with its own
name as the label. Slices without any labelled pixel are left out (the SEG's frames are the labelled ones).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from clickadapt.volumes.dicom import DicomSeries

if TYPE_CHECKING:
    from pydicom.sr.coding import Code

SOFTWARE = "clickadapt"
TYPE_2_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "ReferringPhysicianName",
    "AccessionNumber",
)
"""Patient and study attributes a SEG copies from its source images; anonymised exports often drop them."""
SEG_SERIES_NUMBER_OFFSET = 1000
"""The SEG's series number: its source series' number plus this (it is a new series of the same study)."""


def _segment_codes(name: str) -> tuple[Code, Code]:
    from pydicom.sr.codedict import codes

    if name.lower() == "lesion":
        return codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Lesion
    return codes.SCT.Tissue, codes.SCT.Tissue


def segmentation_of_series(
    series: DicomSeries,
    label: np.ndarray,
    class_names: Sequence[str],
    description: str = "clickadapt interactive segmentation",
    software_version: str = "",
) -> bytes:
    """A DICOM SEG (binary segments, one per class but background) of ``label`` over ``series``' images.

    Args:
        series: The series the label was drawn on.
        label: ``(columns, rows, slices)`` class indices, in :func:`~clickadapt.volumes.dicom.read_dicom_series`'s
            voxel order.
        class_names: The task's class names, background first.
        description: The SEG's ``SeriesDescription``.
        software_version: Written to ``SoftwareVersions``.

    Returns:
        The SEG file's bytes (DICOM Part 10).

    Raises:
        ValueError: A label of another shape than the series', classes outside ``class_names``, or no labelled
            pixel at all (a SEG needs at least one frame).
    """
    import highdicom as hd
    import pydicom

    datasets = [pydicom.dcmread(str(path), stop_before_pixels=True) for path in series.files]
    for dataset in datasets:  # type 2 attributes a SEG copies from its sources: empty where an export left them out
        for keyword in TYPE_2_COPIED:
            if keyword not in dataset:
                setattr(dataset, keyword, "")
    rows, columns = int(datasets[0].Rows), int(datasets[0].Columns)
    values = np.asarray(label)
    if values.shape != (columns, rows, len(datasets)):
        raise ValueError(
            f"the label has shape {values.shape}; the series {series.label} is {columns} × {rows} × {len(datasets)}"
        )
    if values.size and (values.min() < 0 or values.max() >= len(class_names)):
        raise ValueError(f"the label holds classes {values.min()}..{values.max()}; the task has {len(class_names)}")
    frames = np.ascontiguousarray(np.transpose(values, (2, 1, 0))).astype(np.uint8)  # (slices, rows, columns)
    present = [index for index in range(1, len(class_names)) if (frames == index).any()]
    if not present:
        raise ValueError(f"nothing is labelled in {series.label}: a DICOM SEG needs at least one labelled pixel")
    algorithm = hd.AlgorithmIdentificationSequence(
        name=SOFTWARE, version=software_version or "unknown", family=_ai_family()
    )
    segments = []
    for number, index in enumerate(present, start=1):
        category, kind = _segment_codes(class_names[index])
        segments.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=class_names[index],
                segmented_property_category=category,
                segmented_property_type=kind,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
                algorithm_identification=algorithm,
            )
        )
    numbered = np.zeros_like(frames)
    for number, index in enumerate(present, start=1):
        numbered[frames == index] = number
    source_number = getattr(datasets[0], "SeriesNumber", None)
    seg = hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=numbered,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=hd.UID(),
        series_number=(int(source_number) if source_number not in (None, "") else 0) + SEG_SERIES_NUMBER_OFFSET,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=SOFTWARE,
        manufacturer_model_name=SOFTWARE,
        software_versions=software_version or "unknown",
        device_serial_number="0",
        series_description=description,
    )
    buffer = io.BytesIO()
    seg.save_as(buffer)
    return buffer.getvalue()


def _ai_family() -> Code:
    from pydicom.sr.codedict import codes

    return codes.cid7162.ArtificialIntelligence
