"""Brain MRI lesion readers: BRATS (NIfTI), MSLUB (NIfTI) and the TCGA lower-grade glioma slices (TIFF or WebP).

Volumes are reoriented to (L, A, S) and cut into axial slices on the last axis, shown upright with
the patient's right on the picture's left (:func:`~clickadapt.data.files.axial_slice`); the LGG
slices are already upright. Intensities are normalised per volume (per slice for LGG) with
:func:`~clickadapt.data.preprocess.normalise_brain_intensities`, then padded or cropped to
``size × size``. The label is binary: 0 background, 1 lesion (all tumour sub-labels merged).

``Sample.domain`` is the modality for BRATS and MSLUB (``"FLAIR"``, ``"T1c"``, ``"T1POST"``, …) and
``"<site>-<modality>"`` for LGG (e.g. ``"HT-post-contrast"``), since the acquisition site is a shift of
its own there.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from clickadapt.data.base import DatasetReader, LoadUnit, select_lesion_slices
from clickadapt.data.files import axial_slice, check_same_shape, read_nifti, read_picture, require_dir
from clickadapt.data.preprocess import (
    apply_brain_intensity_stats,
    brain_intensity_stats,
    finish_brain_slice,
    pad_or_crop_label,
    preprocess_brain_slice,
    resolve_brain_mask,
)
from clickadapt.data.sample import Sample

if TYPE_CHECKING:
    from clickadapt.data.registry import DatasetConfig

logger = logging.getLogger(__name__)

# A voxel of a 0/1 mask stored as float (0.99999997 in the BRATS brain masks) is "on" above this.
MASK_THRESHOLD = 0.5


def _single_match(folder: Path, pattern: str, what: str) -> Path:
    matches = sorted(folder.glob(pattern))
    if not matches:
        raise FileNotFoundError(f"{what} not found: {folder / pattern}")
    if len(matches) > 1:
        raise ValueError(f"several files match {what} {folder / pattern}: {[m.name for m in matches]}")
    return matches[0]


def volume_samples(
    image: np.ndarray,
    lesion: np.ndarray,
    brain_mask: np.ndarray | None,
    config: DatasetConfig,
    dataset: str,
    domain: str,
    patient: str,
    source: Path,
) -> list[Sample]:
    """Normalise a volume with its in-brain statistics and cut out the slices chosen by the policy.

    Args:
        image: ``(L, A, S)`` intensities.
        lesion: Boolean lesion mask of the same shape.
        brain_mask: Boolean brain mask of the same shape, or ``None`` for the non-zero voxels.
        config: Supplies ``slice_policy``, ``min_lesion_pixels``, ``size`` and the clipping range.
        dataset, domain, patient, source: Recorded in each sample.

    Returns:
        Samples in ascending slice order.
    """
    chosen = select_lesion_slices(lesion.sum(axis=(0, 1)), config.slice_policy, config.min_lesion_pixels)
    if not chosen:
        return []
    # Statistics from the whole volume; only the chosen slices are transformed. Gathering the chosen
    # slices in one fancy-indexing pass is much faster than strided slicing of the last axis one by one.
    brain = resolve_brain_mask(image, brain_mask)
    stats = brain_intensity_stats(image, brain, config.clip_percentiles)
    size = config.resolved_size
    image_slices, brain_slices, lesion_slices = (volume[:, :, chosen] for volume in (image, brain, lesion))
    return [
        Sample(
            image=finish_brain_slice(
                apply_brain_intensity_stats(axial_slice(image_slices, j), axial_slice(brain_slices, j), stats), size
            ),
            label=pad_or_crop_label(axial_slice(lesion_slices, j), size),
            task="brain",
            dataset=dataset,
            domain=domain,
            patient=patient,
            slice_index=index,
            source=str(source),
        )
        for j, index in enumerate(chosen)
    ]


class BratsReader(DatasetReader):
    """BRATS as distributed with DeepMedic: ``{train,validation,test}/brats_2013_patNNNN_1/`` with
    ``{Flair,T1c}_subtrMeanDivStd.nii.gz``, ``brainmask.nii.gz`` and ``OTMultiClass.nii.gz`` (whole
    tumour = label > 0). ``patient`` is ``patNNNN``; the brain mask defines the brain voxels.
    """

    name: ClassVar[str] = "brats"
    task: ClassVar[str | None] = "brain"
    subfolder: ClassVar[str | None] = "brain/brats-deepmedic"
    splits: ClassVar[tuple[str, ...]] = ("train", "validation", "test")
    modalities: ClassVar[tuple[str, ...]] = ("FLAIR", "T1c")
    default_modality: ClassVar[str | None] = "FLAIR"
    file_prefixes: ClassVar[dict[str, str]] = {"FLAIR": "Flair", "T1c": "T1c"}
    patient_pattern: ClassVar[re.Pattern[str]] = re.compile(r"(pat\d+)")

    def list_units(self, config: DatasetConfig, root: Path) -> list[LoadUnit]:
        """One unit per patient folder of the selected splits."""
        modality = config.resolved_modality
        units = []
        for split in (config.split,) if config.split is not None else self.splits:
            split_dir = root / split
            if config.split is None and not split_dir.is_dir():
                continue
            for folder in sorted(p for p in require_dir(split_dir, "BRATS split folder").iterdir() if p.is_dir()):
                match = self.patient_pattern.search(folder.name)
                patient = match.group(1) if match else folder.name
                files = {
                    "image": _single_match(
                        folder, f"{self.file_prefixes[modality]}_*.nii*", f"BRATS {modality} volume"
                    ),
                    "brainmask": _single_match(folder, "brainmask.nii*", "BRATS brain mask"),
                    "label": _single_match(folder, "OTMultiClass.nii*", "BRATS tumour labels"),
                }
                units.append(LoadUnit(domain=modality, patient=patient, files=files, extra={"split": split}))
        return units

    def load_unit(self, unit: LoadUnit, config: DatasetConfig) -> list[Sample]:
        """Read the modality, brain mask and tumour labels of one patient."""
        image = read_nifti(unit.files["image"])
        brain = read_nifti(unit.files["brainmask"]) > MASK_THRESHOLD
        lesion = read_nifti(unit.files["label"]) > MASK_THRESHOLD
        check_same_shape(unit.files["image"], image.shape, unit.files["brainmask"], brain.shape)
        check_same_shape(unit.files["image"], image.shape, unit.files["label"], lesion.shape)
        return volume_samples(image, lesion, brain, config, self.name, unit.domain, unit.patient, unit.files["image"])


class MslubReader(DatasetReader):
    """MSLUB (MNI-registered): ``patientNN/{FLAIR,T1,T1POST,T2}_*.nii.gz`` and the consensus lesion mask
    ``GOLD_STANDARD_*.nii.gz``. Skull-stripped, so the brain is the non-zero voxels. ``patient`` is the
    folder name, e.g. ``patient07``.
    """

    name: ClassVar[str] = "mslub"
    task: ClassVar[str | None] = "brain"
    subfolder: ClassVar[str | None] = "brain/mslub/cross_sectional/MNI"
    modalities: ClassVar[tuple[str, ...]] = ("FLAIR", "T1", "T1POST", "T2")
    default_modality: ClassVar[str | None] = "FLAIR"

    def list_units(self, config: DatasetConfig, root: Path) -> list[LoadUnit]:
        """One unit per ``patient*`` folder."""
        modality = config.resolved_modality
        folders = sorted(
            p for p in require_dir(root, "MSLUB folder").iterdir() if p.is_dir() and p.name.startswith("patient")
        )
        return [
            LoadUnit(
                domain=modality,
                patient=folder.name,
                files={
                    "image": _single_match(folder, f"{modality}_*.nii*", f"MSLUB {modality} volume"),
                    "label": _single_match(folder, "GOLD_STANDARD_*.nii*", "MSLUB lesion mask"),
                },
            )
            for folder in folders
        ]

    def load_unit(self, unit: LoadUnit, config: DatasetConfig) -> list[Sample]:
        """Read the modality and the lesion mask of one patient."""
        image = read_nifti(unit.files["image"])
        lesion = read_nifti(unit.files["label"]) > MASK_THRESHOLD
        check_same_shape(unit.files["image"], image.shape, unit.files["label"], lesion.shape)
        return volume_samples(image, lesion, None, config, self.name, unit.domain, unit.patient, unit.files["image"])


class LggReader(DatasetReader):
    """TCGA lower-grade glioma (kaggle_3m): ``<case>/<case>_<n>.tif`` (256×256×3: pre-contrast, FLAIR,
    post-contrast) and ``<case>_<n>_mask.tif`` ({0, 255}), as downloaded, or the same pixels stored as
    lossless WebP (``<case>_<n>.webp``, ``<case>_<n>_mask.webp``).

    Domains filter the institution code in the case id (``CS``, ``DU``, ``EZ``, ``FG``, ``HT``); each
    slice is normalised with its own non-zero pixels. ``patient`` is the case id; ``slice_index`` the
    slice number in the file name; the policy picks slices per patient.

    The dataset's authors replaced a missing sequence by a copy of FLAIR for some patients. Such a
    patient is skipped (with a logged reason) when that sequence is requested: the reader checks the
    pixels themselves (the requested channel equals the FLAIR channel on every chosen slice), which
    works for both file layouts and agrees with the ``*_is_flair`` columns of the shared copy's
    ``selected_slices.tsv``.
    """

    name: ClassVar[str] = "lgg"
    task: ClassVar[str | None] = "brain"
    subfolder: ClassVar[str | None] = "brain/lgg-kaggle3m/kaggle_3m"
    domains: ClassVar[tuple[str, ...]] = ("CS", "DU", "EZ", "FG", "HT")
    modalities: ClassVar[tuple[str, ...]] = ("pre-contrast", "FLAIR", "post-contrast")
    default_modality: ClassVar[str | None] = "FLAIR"
    slice_suffixes: ClassVar[tuple[str, ...]] = (".tif", ".tiff", ".webp")
    version: ClassVar[int] = 2  # 2: WebP slices; patients whose sequence is a FLAIR copy are skipped
    slice_pattern: ClassVar[re.Pattern[str]] = re.compile(r"_(\d+)$")

    def list_units(self, config: DatasetConfig, root: Path) -> list[LoadUnit]:
        """One unit per case folder of the selected sites, listing its slice files (TIFF or WebP)."""
        modality = config.resolved_modality
        units = []
        for folder in sorted(p for p in require_dir(root, "LGG folder").iterdir() if p.is_dir()):
            parts = folder.name.split("_")
            site = parts[1] if len(parts) > 2 else ""
            if site not in self.domains or (config.domains is not None and site not in config.domains):
                continue
            slices: dict[int, Path] = {}
            for path in sorted(folder.iterdir()):
                if path.suffix.lower() not in self.slice_suffixes or path.stem.endswith("_mask"):
                    continue
                match = self.slice_pattern.search(path.stem)
                if match is None:
                    continue
                index = int(match.group(1))
                if index in slices:
                    raise ValueError(
                        f"LGG slice {index} of {folder} is stored twice: {slices[index].name}, {path.name}"
                    )
                slices[index] = path
            files = {f"slice{index}": slices[index] for index in sorted(slices)}
            units.append(
                LoadUnit(domain=f"{site}-{modality}", patient=folder.name, files=files, extra={"modality": modality})
            )
        return units

    def load_unit(self, unit: LoadUnit, config: DatasetConfig) -> list[Sample]:
        """Read every slice's mask, choose slices by the policy, then read and normalise those images.

        Returns no sample (and logs why) when the requested sequence is a copy of FLAIR for this patient.
        """
        channel = self.modalities.index(unit.extra["modality"])
        flair = self.modalities.index("FLAIR")
        indices = [int(name.removeprefix("slice")) for name in unit.files]
        images = list(unit.files.values())
        masks = [path.with_name(f"{path.stem}_mask{path.suffix}") for path in images]
        lesions = [read_picture(mask, "L") > MASK_THRESHOLD for mask in masks]
        chosen = select_lesion_slices([int(m.sum()) for m in lesions], config.slice_policy, config.min_lesion_pixels)
        pictures = []
        for position in chosen:
            picture = read_picture(images[position])
            if picture.ndim != 3 or picture.shape[-1] != len(self.modalities):
                raise ValueError(f"LGG slice {images[position]} has shape {picture.shape}; expected (H, W, 3)")
            check_same_shape(images[position], picture.shape[:2], masks[position], lesions[position].shape)
            pictures.append(picture)
        if channel != flair and pictures and all(np.array_equal(p[..., channel], p[..., flair]) for p in pictures):
            logger.warning(
                "skipping LGG patient %s: its %s sequence is a copy of FLAIR (%s)",
                unit.patient,
                unit.extra["modality"],
                images[chosen[0]].parent,
            )
            return []
        return [
            Sample(
                image=preprocess_brain_slice(
                    picture[..., channel], None, config.resolved_size, config.clip_percentiles
                ),
                label=pad_or_crop_label(lesions[position], config.resolved_size),
                task="brain",
                dataset=self.name,
                domain=unit.domain,
                patient=unit.patient,
                slice_index=indices[position],
                source=str(images[position]),
            )
            for position, picture in zip(chosen, pictures, strict=True)
        ]
