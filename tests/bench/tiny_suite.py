"""A one-stream benchmark suite on tiny generated data and a tiny checkpoint, shared by the harness tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from clickadapt.models.checkpoint import CheckpointMeta, save_checkpoint
from clickadapt.models.factory import ModelConfig, build_model
from clickadapt.tasks import BRAIN

SIZE = 32
IMAGES = 4
BUDGET = 2


def write_folder_dataset(root: Path, count: int) -> Path:
    """``images/*.png`` grey squares with a bright lesion and ``masks/*.png`` holding class indices."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for index in range(count):
        mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
        mask[5 + index : 15 + 2 * index, 8 : 18 + index] = 1
        image = (60 + 120 * mask + rng.integers(0, 30, (SIZE, SIZE))).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"case{index}.png")
        Image.fromarray(mask).save(root / "masks" / f"case{index}.png")
    return root


def write_tiny_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    config = ModelConfig(widths=[4, 8], affine_norm=True)
    model = build_model(config, BRAIN.input_channels, BRAIN.num_classes)
    save_checkpoint(path, model, CheckpointMeta(task="brain", model=config, preprocessing={"size": SIZE}))
    return path


def bench_mapping(root: Path) -> dict[str, Any]:
    """A one-stream suite: frozen and post × 2 stream orders, post at a 1-click budget, an ablation label."""
    data = write_folder_dataset(root / "lesions", IMAGES)
    folder = {"reader": "folder", "root": str(data), "task": "brain", "size": SIZE}
    return {
        "title": "tiny bench",
        "models": {"brain": str(write_tiny_checkpoint(root / "tiny.pt"))},
        "streams": [{"name": "tiny", "title": "Tiny lesions", "shift": "modality", "data": folder}],
        "source_validation": {"brain": folder},
        "source_validation_max_images": 2,
        "experiments": [
            {"streams": ["all"], "strategies": ["frozen", "post"], "budgets": [BUDGET], "order_seeds": [0, 1]},
            {"streams": ["tiny"], "strategies": ["post"], "budgets": [1], "order_seeds": [0]},
        ],
        "ablations": [
            {
                "streams": ["tiny"],
                "strategies": ["post", {"name": "post", "label": "post-linear", "overrides": {"ccg_form": "linear"}}],
                "budgets": [BUDGET],
                "order_seeds": [0],
            }
        ],
        "max_images": 3,
        "capped": True,
        "workers": 1,
        "cache_dir": str(root / "cache"),
        "data_cache_dir": None,
        "output": str(root / "results"),
    }
