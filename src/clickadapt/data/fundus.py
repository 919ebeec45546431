"""Fundus optic disc and cup readers: RIM-ONE DL, Drishti-GS1, ORIGA and the DoFE multi-domain layout.

Every reader produces the project's label map: 0 background, 1 rim (disc minus cup), 2 cup, so that
disc = rim ∪ cup. Images are preprocessed with :func:`~clickadapt.data.preprocess.preprocess_fundus_image`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from clickadapt.data.base import DatasetReader, LoadUnit
from clickadapt.data.files import check_same_shape, read_picture, require_dir, require_file
from clickadapt.data.preprocess import preprocess_fundus_image, resize_label
from clickadapt.data.sample import Sample

if TYPE_CHECKING:
    from clickadapt.data.registry import DatasetConfig

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
BACKGROUND, RIM, CUP = 0, 1, 2
# Drishti-GS1 soft maps count expert votes (0, 64, 128, 191, 255 = 0..4 of 4); majority = >= 2 votes.
SOFT_MAP_MAJORITY = 128
# Binary {0, 255} masks (RIM-ONE) are foreground above this.
BINARY_MASK_THRESHOLD = 127
# DoFE masks: 0 cup, 128 rim, 255 background; grey values are split halfway between those levels.
DOFE_CUP_BELOW = 64
DOFE_RIM_BELOW = 192
# Side of the square Drishti-GS1 crop around the disc centre, as a fraction of the image side. The
# shared 1024-px crops show the disc at a median 38 % of the side, the RIM-ONE source at 70–80 %; a 0.6
# crop puts it at about 64 % (the largest disc at 85 %), close to the source and ORIGA's 63 %.
DEFAULT_DISC_CROP_FRACTION = 0.6


def fundus_label(disc: np.ndarray, cup: np.ndarray) -> np.ndarray:
    """Label map from disc and cup masks: 0 background, 1 rim (disc minus cup), 2 cup.

    A cup pixel is cup even where the disc mask misses it (the cup lies inside the disc by definition).

    Raises:
        ValueError: The masks differ in shape.
    """
    disc_mask = np.asarray(disc).astype(bool)
    cup_mask = np.asarray(cup).astype(bool)
    if disc_mask.shape != cup_mask.shape:
        raise ValueError(f"disc mask shape {disc_mask.shape} differs from cup mask shape {cup_mask.shape}")
    label = np.zeros(disc_mask.shape, dtype=np.uint8)
    label[disc_mask] = RIM
    label[cup_mask] = CUP
    return label


def binarise_soft_map(soft_map: np.ndarray, threshold: int = SOFT_MAP_MAJORITY) -> np.ndarray:
    """Majority vote of a Drishti-GS1 soft map: ``True`` where at least ``threshold`` (2 of 4 experts)."""
    return np.asarray(soft_map) >= threshold


def dofe_mask_to_label(mask: np.ndarray) -> np.ndarray:
    """DoFE mask (0 cup, 128 rim, 255 background; first channel if RGB) → 0 background, 1 rim, 2 cup."""
    grey = np.asarray(mask)
    if grey.ndim == 3:
        grey = grey[..., 0]
    label = np.zeros(grey.shape, dtype=np.uint8)
    label[grey < DOFE_RIM_BELOW] = RIM
    label[grey < DOFE_CUP_BELOW] = CUP
    return label


def crop_square(array: np.ndarray, center_row: float, center_col: float, side: int) -> np.ndarray:
    """Square crop of ``side`` pixels centred on a point, shifted to stay inside the image.

    The side is reduced to the image's shorter side when larger. Works on ``(H, W)`` and ``(H, W, C)``.
    """
    height, width = array.shape[:2]
    side = int(min(side, height, width))
    top = int(np.clip(round(center_row - side / 2), 0, height - side))
    left = int(np.clip(round(center_col - side / 2), 0, width - side))
    return array[top : top + side, left : left + side]


def make_fundus_sample(
    rgb: np.ndarray, label: np.ndarray, config: DatasetConfig, dataset: str, domain: str, patient: str, source: Path
) -> Sample:
    """Preprocess an RGB image and its label map into a :class:`Sample` of size ``config.size``."""
    size = config.resolved_size
    return Sample(
        image=preprocess_fundus_image(rgb, size),
        label=resize_label(label, size),
        task="fundus",
        dataset=dataset,
        domain=domain,
        patient=patient,
        slice_index=None,
        source=str(source),
    )


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _selected_splits(reader: DatasetReader, config: DatasetConfig) -> tuple[str, ...]:
    return (config.split,) if config.split is not None else reader.splits


class RimOneDLReader(DatasetReader):
    """RIM-ONE DL: ``partitioned_randomly/images/{train,test}/<name>.jpg`` and binary disc/cup masks in
    ``RIM-ONE_DL_reference_segmentations/{glaucoma,normal}/<name>-1-{Disc,Cup}-T.png``.

    Domains are the name prefixes ``r1``, ``r2``, ``r3`` (the three RIM-ONE releases); ``patient`` is
    the image name, e.g. ``r2_Im042``.
    """

    name: ClassVar[str] = "rimone-dl"
    task: ClassVar[str | None] = "fundus"
    subfolder: ClassVar[str | None] = "fundus/rimone-dl"
    splits: ClassVar[tuple[str, ...]] = ("train", "test")
    domains: ClassVar[tuple[str, ...]] = ("r1", "r2", "r3")
    diagnosis_folders: ClassVar[tuple[str, ...]] = ("glaucoma", "normal")
    masks_folder: ClassVar[str] = "RIM-ONE_DL_reference_segmentations"

    def list_units(self, config: DatasetConfig, root: Path) -> list[LoadUnit]:
        """One unit per image of the selected splits and domains."""
        masks_root = require_dir(root / self.masks_folder, "RIM-ONE DL mask folder")
        disc_masks = {
            path.name.removesuffix("-1-Disc-T.png"): path
            for folder in self.diagnosis_folders
            if (masks_root / folder).is_dir()
            for path in (masks_root / folder).glob("*-1-Disc-T.png")
        }
        units = []
        for split in _selected_splits(self, config):
            for image in _images_in(require_dir(root / "partitioned_randomly" / "images" / split, "RIM-ONE DL split")):
                name = image.stem
                domain = name.split("_", 1)[0]
                if config.domains is not None and domain not in config.domains:
                    continue
                disc = disc_masks.get(name)
                if disc is None:
                    folders = ",".join(self.diagnosis_folders)
                    expected = f"{masks_root}/{{{folders}}}/{name}-1-Disc-T.png"
                    raise FileNotFoundError(f"disc mask not found for {image}: expected {expected}")
                cup = disc.with_name(f"{name}-1-Cup-T.png")
                units.append(LoadUnit(domain=domain, patient=name, files={"image": image, "disc": disc, "cup": cup}))
        return units

    def load_unit(self, unit: LoadUnit, config: DatasetConfig) -> list[Sample]:
        """Read the image and both masks; label = rim/cup from the binary masks."""
        image_path, disc_path, cup_path = unit.files["image"], unit.files["disc"], unit.files["cup"]
        rgb = read_picture(image_path, "RGB")
        disc = read_picture(disc_path, "L") > BINARY_MASK_THRESHOLD
        cup = read_picture(cup_path, "L") > BINARY_MASK_THRESHOLD
        check_same_shape(image_path, rgb.shape[:2], disc_path, disc.shape)
        check_same_shape(image_path, rgb.shape[:2], cup_path, cup.shape)
        label = fundus_label(disc, cup)
        return [make_fundus_sample(rgb, label, config, self.name, unit.domain, unit.patient, image_path)]


class DrishtiGS1Reader(DatasetReader):
    """Drishti-GS1: ``{Training,Test}/Images/<id>.jpg``, soft maps in ``GT/<id>/SoftMap/`` (majority
    vote ≥ 128) and the disc centre (``row col``) in ``GT/<id>/<id>_diskCenter.txt``.

    Image and label are cropped to a square of ``config.disc_crop_fraction`` of the image side around
    the disc centre before resizing. Domain ``drishti-gs1``; ``patient`` is the image id.
    """

    name: ClassVar[str] = "drishti-gs1"
    task: ClassVar[str | None] = "fundus"
    subfolder: ClassVar[str | None] = "fundus/drishti-gs1"
    splits: ClassVar[tuple[str, ...]] = ("Training", "Test")

    def list_units(self, config: DatasetConfig, root: Path) -> list[LoadUnit]:
        """One unit per image of the selected splits (ground-truth paths are checked at load time)."""
        units = []
        for split in _selected_splits(self, config):
            for image in _images_in(require_dir(root / split / "Images", "Drishti-GS1 image folder")):
                gt = root / split / "GT" / image.stem
                files = {
                    "image": image,
                    "disc": gt / "SoftMap" / f"{image.stem}_ODsegSoftmap.png",
                    "cup": gt / "SoftMap" / f"{image.stem}_cupsegSoftmap.png",
                    "center": gt / f"{image.stem}_diskCenter.txt",
                }
                units.append(LoadUnit(domain=self.name, patient=image.stem, files=files))
        return units

    @staticmethod
    def read_disc_center(path: Path) -> tuple[float, float]:
        """``(row, col)`` from a ``*_diskCenter.txt`` file.

        Raises:
            FileNotFoundError: Missing file.
            ValueError: The file does not hold two numbers.
        """
        text = require_file(path, "Drishti-GS1 disc centre file").read_text().split()
        try:
            row, col = (float(value) for value in text)
        except ValueError as error:
            raise ValueError(f"cannot read disc centre from {path}: expected 'row col', got {text!r}") from error
        return row, col

    def load_unit(self, unit: LoadUnit, config: DatasetConfig) -> list[Sample]:
        """Read, binarise by majority, crop around the disc centre, preprocess."""
        image_path, disc_path, cup_path = unit.files["image"], unit.files["disc"], unit.files["cup"]
        rgb = read_picture(image_path, "RGB")
        disc = binarise_soft_map(read_picture(disc_path, "L"))
        cup = binarise_soft_map(read_picture(cup_path, "L"))
        check_same_shape(image_path, rgb.shape[:2], disc_path, disc.shape)
        check_same_shape(image_path, rgb.shape[:2], cup_path, cup.shape)
        row, col = self.read_disc_center(unit.files["center"])
        side = round(config.disc_crop_fraction * min(rgb.shape[:2]))
        label = crop_square(fundus_label(disc, cup), row, col, side)
        rgb = crop_square(rgb, row, col, side)
        return [make_fundus_sample(rgb, label, config, self.name, unit.domain, unit.patient, image_path)]


class OrigaReader(DatasetReader):
    """ORIGA crops: ``images/<id>.png`` and label maps ``masks/<id>.png`` (0 background, 1 rim, 2 cup).

    Domain ``origa``; ``patient`` is the image id.
    """

    name: ClassVar[str] = "origa"
    task: ClassVar[str | None] = "fundus"
    subfolder: ClassVar[str | None] = "fundus/origa-30/data"

    def list_units(self, config: DatasetConfig, root: Path) -> list[LoadUnit]:
        """One unit per image in ``images/``."""
        masks = root / "masks"
        return [
            LoadUnit(domain=self.name, patient=image.stem, files={"image": image, "mask": masks / f"{image.stem}.png"})
            for image in _images_in(require_dir(root / "images", "ORIGA image folder"))
        ]

    def load_unit(self, unit: LoadUnit, config: DatasetConfig) -> list[Sample]:
        """Read the image and its label map (values checked to be 0, 1 or 2)."""
        image_path, mask_path = unit.files["image"], unit.files["mask"]
        rgb = read_picture(image_path, "RGB")
        label = read_picture(mask_path, "L")
        check_same_shape(image_path, rgb.shape[:2], mask_path, label.shape)
        if label.size and int(label.max()) > CUP:
            raise ValueError(f"ORIGA mask {mask_path} holds values {np.unique(label).tolist()}; expected 0, 1, 2")
        return [make_fundus_sample(rgb, label, config, self.name, unit.domain, unit.patient, image_path)]


class DofeReader(DatasetReader):
    """The DoFE / BEAL multi-domain layout: ``DomainN/{train,test}/ROIs/{image,mask}/<name>.png`` with
    masks 0 cup, 128 rim, 255 background.

    Domains ``Domain1`` … ``Domain4``; ``patient`` is the file name without extension.
    """

    name: ClassVar[str] = "dofe"
    task: ClassVar[str | None] = "fundus"
    subfolder: ClassVar[str | None] = "fundus/dofe-4domains/data/Fundus"
    splits: ClassVar[tuple[str, ...]] = ("train", "test")
    domains: ClassVar[tuple[str, ...]] = ("Domain1", "Domain2", "Domain3", "Domain4")

    def list_units(self, config: DatasetConfig, root: Path) -> list[LoadUnit]:
        """One unit per image of the selected domains and splits (domains absent on disk are skipped
        unless asked for by name)."""
        require_dir(root, "DoFE root folder")
        units = []
        for domain in config.domains if config.domains is not None else self.domains:
            if config.domains is None and not (root / domain).is_dir():
                continue
            for split in _selected_splits(self, config):
                rois = root / domain / split / "ROIs"
                for image in _images_in(require_dir(rois / "image", "DoFE image folder")):
                    files = {"image": image, "mask": rois / "mask" / f"{image.stem}.png"}
                    units.append(LoadUnit(domain=domain, patient=image.stem, files=files))
        return units

    def load_unit(self, unit: LoadUnit, config: DatasetConfig) -> list[Sample]:
        """Read the image and its 0/128/255 mask."""
        image_path, mask_path = unit.files["image"], unit.files["mask"]
        rgb = read_picture(image_path, "RGB")
        mask = read_picture(mask_path)
        check_same_shape(image_path, rgb.shape[:2], mask_path, mask.shape[:2])
        label = dofe_mask_to_label(mask)
        return [make_fundus_sample(rgb, label, config, self.name, unit.domain, unit.patient, image_path)]
