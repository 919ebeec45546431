"""Reading a volume as stored (voxel order, affine, header) and writing a label volume in the same geometry.

NIfTI goes through nibabel, NRRD through pynrrd. Nothing is reoriented or resampled here: the array keeps the
file's voxel order, so a voxel index ``[i, j, k]`` from 3D Slicer or MONAI Label addresses the same voxel, and
a label written with :func:`write_label` has the image's exact shape, voxel order and affine (NIfTI: the
image's header with the data type changed; NRRD: the image's space, directions and origin).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from clickadapt.data.files import NIFTI_SUFFIXES, require_file

NRRD_SUFFIXES = (".nrrd", ".nhdr")
VOLUME_SUFFIXES = NIFTI_SUFFIXES + NRRD_SUFFIXES
"""File name endings :func:`read_volume` accepts."""

# NRRD spaces as sign flips of the world axes relative to RAS (NRRD also allows "LPS"/"RAS" shorthands).
_NRRD_SPACE_SIGNS: dict[str, tuple[float, float, float]] = {
    "right-anterior-superior": (1.0, 1.0, 1.0),
    "ras": (1.0, 1.0, 1.0),
    "left-posterior-superior": (-1.0, -1.0, 1.0),
    "lps": (-1.0, -1.0, 1.0),
    "left-anterior-superior": (-1.0, 1.0, 1.0),
    "las": (-1.0, 1.0, 1.0),
}


@dataclass
class Volume:
    """A 3D scalar volume as stored in its file.

    Attributes:
        data: ``(I, J, K)`` values in the file's voxel order (not reoriented).
        affine: 4×4 voxel-to-world affine in RAS+ millimetres (nibabel's convention, also for NRRD files).
        format: ``"nifti"`` or ``"nrrd"``: how :func:`write_label` writes a label of this volume.
        header: The file's header (a nibabel header or a pynrrd header dict), reused for labels.
    """

    data: np.ndarray
    affine: np.ndarray
    format: str = "nifti"
    header: Any = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape in file voxel order."""
        return int(self.data.shape[0]), int(self.data.shape[1]), int(self.data.shape[2])


def is_volume_path(path: str | Path) -> bool:
    """Whether the file name ends like a volume file :func:`read_volume` reads (NIfTI or NRRD; it also reads a
    DICOM series folder)."""
    return str(path).lower().endswith(VOLUME_SUFFIXES)


def _squeeze_3d(data: np.ndarray, path: Path) -> np.ndarray:
    if data.ndim == 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3D volume, got shape {data.shape}")
    return data


def _nrrd_affine(header: dict[str, Any], path: Path) -> np.ndarray:
    """Voxel-to-RAS affine of an NRRD header (``space directions`` rows are the axes' steps)."""
    space = str(header.get("space", "right-anterior-superior")).lower()
    if space not in _NRRD_SPACE_SIGNS:
        raise ValueError(f"{path}: NRRD space {space!r} is not supported (RAS, LPS or LAS)")
    directions = np.asarray(header.get("space directions", np.eye(3)), dtype=np.float64)
    if directions.shape != (3, 3) or not np.isfinite(directions).all():
        raise ValueError(f"{path}: expected 3×3 finite NRRD space directions, got {directions.tolist()}")
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)
    signs = np.asarray(_NRRD_SPACE_SIGNS[space])
    affine = np.eye(4)
    affine[:3, :3] = (directions * signs).T  # column d: world step of voxel axis d
    affine[:3, 3] = origin * signs
    return affine


def read_volume(path: str | Path) -> Volume:
    """Read a NIfTI (``.nii``, ``.nii.gz``) or NRRD (``.nrrd``, ``.nhdr``) volume as stored, or the DICOM series
    in a folder (:func:`clickadapt.volumes.dicom.read_dicom_series`: ordered along the slice normal; its labels are
    written as NIfTI).

    Raises:
        FileNotFoundError: The file or folder does not exist.
        ValueError: An unknown ending, an undecodable file or one that is not 3D, a folder without exactly one
            DICOM series that stacks (naming the file).
    """
    if Path(path).is_dir():
        from clickadapt.volumes.dicom import read_dicom_series

        series = read_dicom_series(path)
        return Volume(np.asarray(series.dataobj), np.asarray(series.affine, dtype=np.float64), "nifti", series.header)
    path = require_file(Path(path), "volume file")
    name = path.name.lower()
    try:
        if name.endswith(NIFTI_SUFFIXES):
            image = nib.load(str(path))
            data = _squeeze_3d(np.asanyarray(image.dataobj), path)  # type: ignore[attr-defined]
            return Volume(np.asarray(data), np.asarray(image.affine, dtype=np.float64), "nifti", image.header)  # type: ignore[attr-defined]
        if name.endswith(NRRD_SUFFIXES):
            import nrrd

            data, header = nrrd.read(str(path))
            data = _squeeze_3d(np.asarray(data), path)
            return Volume(data, _nrrd_affine(header, path), "nrrd", header)
    except ValueError as error:
        raise ValueError(f"cannot read volume {path}: {error}") from error
    except Exception as error:  # decoders raise many unrelated types; report them all with the path
        raise ValueError(f"cannot read volume {path}: {error}") from error
    raise ValueError(f"{path}: not a volume file (expected one of {', '.join(VOLUME_SUFFIXES)})")


def write_label(path: str | Path, label: np.ndarray, like: Volume) -> Path:
    """Write a label volume with ``like``'s shape, voxel order and geometry.

    Args:
        path: Output file; its ending picks the format (NIfTI or NRRD) and may differ from ``like``'s.
        label: Integer classes ``(I, J, K)`` in ``like``'s voxel order (stored as ``uint8``).
        like: The volume the label belongs to.

    Returns:
        ``path``.

    Raises:
        ValueError: A label of another shape, classes outside 0..255, or an unknown ending.
    """
    path = Path(path)
    values = np.asarray(label)
    if values.shape != like.shape:
        raise ValueError(f"label has shape {values.shape}, the volume {like.shape}")
    if values.size and (int(values.min()) < 0 or int(values.max()) > 255):
        raise ValueError(f"label classes must lie in 0..255, got {values.min()}..{values.max()}")
    labels = values.astype(np.uint8)
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        header = like.header.copy() if isinstance(like.header, nib.Nifti1Header) else None
        image = nib.Nifti1Image(labels, like.affine, header)
        image.set_data_dtype(np.uint8)
        image.header.set_slope_inter(1.0, 0.0)
        # Keep the image's codes, but at least 1 (scanner): a label must carry the image's affine.
        codes = (1, 1) if header is None else (int(header["qform_code"]), int(header["sform_code"]))
        image.set_qform(like.affine, code=max(1, codes[0]))
        image.set_sform(like.affine, code=max(1, codes[1]))
        nib.save(image, str(path))
        return path
    if name.endswith(NRRD_SUFFIXES):
        import nrrd

        signs = np.asarray(_NRRD_SPACE_SIGNS["right-anterior-superior"])
        nrrd_header: dict[str, Any] = {
            "space": "right-anterior-superior",
            "space directions": (like.affine[:3, :3].T * signs).tolist(),
            "space origin": (like.affine[:3, 3] * signs).tolist(),
            "kinds": ["domain", "domain", "domain"],
            "encoding": "gzip",
        }
        nrrd.write(str(path), labels, nrrd_header)
        return path
    raise ValueError(f"{path}: unknown label file ending (expected one of {', '.join(VOLUME_SUFFIXES)})")
