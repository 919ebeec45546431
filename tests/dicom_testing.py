"""Helpers of the DICOM series tests: write a volume as a real DICOM series, one Part 10 file per slice.

The files carry what a scanner's export carries for geometry (``ImagePositionPatient``,
``ImageOrientationPatient``, ``PixelSpacing``, ``SliceThickness``) and the pixel values as ``uint16`` with
``RescaleSlope`` / ``RescaleIntercept``, so :func:`quantised` gives the exact values a reader must return.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
LEVELS = 65535


def _scaling(data: np.ndarray) -> tuple[float, float]:
    """Slope and intercept as the files state them (10 significant digits: a DICOM decimal string)."""
    low, high = float(data.min()), float(data.max())
    slope = (high - low) / LEVELS if high > low else 1.0
    return float(f"{slope:.10g}"), float(f"{low:.10g}")


def quantised(image: nib.Nifti1Image) -> nib.Nifti1Image:
    """``image`` with each value replaced by what its DICOM file stores: ``uint16 * slope + intercept``, computed
    as a reader computes it (``float32`` pixels times the slope, plus the intercept)."""
    data = np.asarray(image.dataobj, dtype=np.float32)
    slope, intercept = _scaling(data)
    stored = np.rint((data - intercept) / slope).clip(0, LEVELS).astype(np.uint16)
    values = stored.astype(np.float32) * slope
    values += intercept
    return nib.Nifti1Image(values, image.affine)


def write_dicom_series(
    image: nib.Nifti1Image,
    folder: Path,
    names: Sequence[str] | None = None,
    series_uid: str | None = None,
    description: str = "FLAIR AX",
    series_number: int = 3,
    skip: Sequence[int] = (),
) -> list[Path]:
    """Write every slice along ``image``'s third voxel axis as one DICOM file in ``folder``.

    Args:
        image: A 3D volume (any orientation, orthogonal voxel axes).
        folder: Where the files go (made if needed).
        names: File names, one per slice (default ``IM0000.dcm`` …); their order need not be the slices'.
        series_uid: ``SeriesInstanceUID`` (default a fresh one).
        description: ``SeriesDescription``.
        series_number: ``SeriesNumber``.
        skip: Slice indices not written (a series with a missing slice).

    Returns:
        The files written, in slice order.
    """
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    data = np.asarray(image.dataobj, dtype=np.float32)
    slope, intercept = _scaling(data)
    stored = np.rint((data - intercept) / slope).clip(0, LEVELS).astype(np.uint16)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(image.affine, dtype=np.float64)
    column_step, row_step = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
    orientation = [*(lps[:3, 0] / column_step), *(lps[:3, 1] / row_step)]
    series_uid = series_uid or generate_uid()
    study_uid, frame_uid = generate_uid(), generate_uid()
    names = list(names) if names is not None else [f"IM{index:04d}.dcm" for index in range(data.shape[2])]
    written: list[Path] = []
    for index in range(data.shape[2]):
        if index in skip:
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / names[index]
        dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\x00" * 128)
        dataset.SOPClassUID = MR_IMAGE_STORAGE
        dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        dataset.Modality = "MR"
        dataset.PatientName = "Test^Series"
        dataset.PatientID = "TEST"
        dataset.StudyInstanceUID = study_uid
        dataset.SeriesInstanceUID = series_uid
        dataset.FrameOfReferenceUID = frame_uid
        dataset.SeriesNumber = series_number
        dataset.SeriesDescription = description
        dataset.InstanceNumber = data.shape[2] - index  # numbered against the position, as some exports do
        dataset.ImagePositionPatient = [float(v) for v in (lps @ np.array([0.0, 0.0, index, 1.0]))[:3]]
        dataset.ImageOrientationPatient = [float(v) for v in orientation]
        dataset.PixelSpacing = [float(row_step), float(column_step)]
        dataset.SliceThickness = float(np.linalg.norm(lps[:3, 2]))
        dataset.Rows, dataset.Columns = int(data.shape[1]), int(data.shape[0])
        dataset.SamplesPerPixel = 1
        dataset.PhotometricInterpretation = "MONOCHROME2"
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 16, 15
        dataset.PixelRepresentation = 0
        dataset.RescaleSlope = f"{slope:.10g}"
        dataset.RescaleIntercept = f"{intercept:.10g}"
        dataset.PixelData = np.ascontiguousarray(stored[:, :, index].T).tobytes()
        pydicom.dcmwrite(str(path), dataset, enforce_file_format=True)
        written.append(path)
    return written


JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"
"""JPEG Lossless, first-order prediction (process 14, selection value 1): the compression MR and CT exports use most."""
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"


def transcode(path: Path, transfer_syntax: str) -> None:
    """Re-encode a DICOM file's pixel data in place with another (compressed) transfer syntax, through GDCM (its
    writer drops the geometry of the header, so only the encoded pixel data is taken from it)."""
    import gdcm
    import pydicom

    syntaxes = {
        JPEG_LOSSLESS: gdcm.TransferSyntax.JPEGLosslessProcess14_1,
        JPEG_2000_LOSSLESS: gdcm.TransferSyntax.JPEG2000Lossless,
    }
    reader = gdcm.ImageReader()
    reader.SetFileName(str(path))
    if not reader.Read():
        raise ValueError(f"GDCM cannot read {path}")
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(syntaxes[transfer_syntax]))
    change.SetInput(reader.GetImage())
    if not change.Change():
        raise ValueError(f"GDCM cannot re-encode {path}")
    encoded = path.with_name(path.name + ".gdcm")
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(encoded))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    if not writer.Write():
        raise ValueError(f"GDCM cannot write {path}")
    dataset = pydicom.dcmread(str(path))
    dataset.PixelData = pydicom.dcmread(str(encoded)).PixelData
    dataset["PixelData"].VR = "OB"
    dataset.file_meta.TransferSyntaxUID = transfer_syntax
    encoded.unlink()
    pydicom.dcmwrite(str(path), dataset, enforce_file_format=True)


@contextmanager
def header_reads() -> Iterator[list[str]]:
    """The files whose DICOM header is read (``pydicom.dcmread`` with ``stop_before_pixels``) inside the block."""
    reads: list[str] = []
    real_dcmread = pydicom.dcmread

    def counting_dcmread(path: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("stop_before_pixels"):
            reads.append(Path(str(path)).name)
        return real_dcmread(path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pydicom, "dcmread", counting_dcmread)
        yield reads
