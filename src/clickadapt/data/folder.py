"""A generic folder of 2D image/mask pairs, for data of your own.

Layout::

    <root>/images/<name>.<png|jpg|jpeg|tif|tiff>
    <root>/masks/<name>.png          # class indices of the task (fundus 0/1/2, brain 0/1)

The task comes from ``DatasetConfig.task``. Fundus images are read as RGB and resized; brain images
are read as grey (colour pictures are averaged over channels), normalised with their non-zero pixels
and padded or cropped. ``domain`` is the folder's name, ``patient`` the file name without extension.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from clickadapt.data.base import DatasetReader, LoadUnit
from clickadapt.data.files import check_same_shape, read_picture, require_dir
from clickadapt.data.fundus import IMAGE_SUFFIXES, make_fundus_sample
from clickadapt.data.preprocess import pad_or_crop_label, preprocess_brain_slice
from clickadapt.data.sample import Sample
from clickadapt.tasks import get_task

if TYPE_CHECKING:
    from clickadapt.data.registry import DatasetConfig


class FolderReader(DatasetReader):
    """Pairs ``images/<name>.*`` and ``masks/<name>.png``; ``root`` and ``task`` must be given."""

    name: ClassVar[str] = "folder"
    task: ClassVar[str | None] = None
    subfolder: ClassVar[str | None] = None

    def list_units(self, config: DatasetConfig, root: Path) -> list[LoadUnit]:
        """One unit per image; a missing mask is reported here, before any pixel is read.

        Raises:
            FileNotFoundError: ``images/`` or a mask is missing.
            ValueError: Two images share a name (``a.png`` and ``a.jpg``).
        """
        images_dir = require_dir(root / "images", "image folder")
        masks_dir = root / "masks"
        by_name: dict[str, Path] = {}
        for path in sorted(images_dir.iterdir()):
            if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if path.stem in by_name:
                raise ValueError(f"two images named {path.stem!r}: {by_name[path.stem]} and {path}")
            by_name[path.stem] = path
        units = []
        for name, image in sorted(by_name.items()):
            mask = masks_dir / f"{name}.png"
            if not mask.is_file():
                raise FileNotFoundError(f"mask not found for {image}: expected {mask}")
            units.append(LoadUnit(domain=root.name, patient=name, files={"image": image, "mask": mask}))
        return units

    def load_unit(self, unit: LoadUnit, config: DatasetConfig) -> list[Sample]:
        """Read one pair and preprocess it for the configured task.

        Raises:
            ValueError: Sizes differ, or the mask holds a class index the task does not have.
        """
        task = get_task(config.resolved_task)
        image_path, mask_path = unit.files["image"], unit.files["mask"]
        label = read_picture(mask_path)
        if label.ndim == 3:
            label = label[..., 0]
        if label.size and (int(label.min()) < 0 or int(label.max()) >= task.num_classes):
            raise ValueError(
                f"mask {mask_path} holds values {np.unique(label).tolist()[:10]}; task {task.name!r} "
                f"expects class indices 0..{task.num_classes - 1}"
            )
        if task.name == "fundus":
            rgb = read_picture(image_path, "RGB")
            check_same_shape(image_path, rgb.shape[:2], mask_path, label.shape)
            return [make_fundus_sample(rgb, label, config, self.name, unit.domain, unit.patient, image_path)]
        picture = read_picture(image_path)
        grey = picture.astype(np.float64).mean(axis=-1) if picture.ndim == 3 else picture
        check_same_shape(image_path, grey.shape, mask_path, label.shape)
        size = config.resolved_size
        return [
            Sample(
                image=preprocess_brain_slice(grey, None, size, config.clip_percentiles),
                label=pad_or_crop_label(label, size),
                task=task.name,
                dataset=self.name,
                domain=unit.domain,
                patient=unit.patient,
                slice_index=None,
                source=str(image_path),
            )
        ]
