"""clickadapt: interactive medical image segmentation that keeps learning from its users' clicks.

Implements OAIMS (Xu et al., "Continuous Online Adaptation Driven by User Interaction for Medical
Image Segmentation", arXiv 2503.06717 / ICLR 2026) and its baselines, plus a web application.

From Python, one import and five calls (see ``docs/library_example.py``)::

    import clickadapt

    predictor = clickadapt.load_predictor("brain", adapt="oaims", safety=True)
    predictor.set_image(pixels_or_path)
    mask = predictor.add_click(row, col, "lesion")
    final = predictor.finish()
    predictor.save("adapted.pt")

``import clickadapt`` stays light: the predictor (and torch with it) is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Predictor", "__version__", "load_predictor"]

if TYPE_CHECKING:
    from clickadapt.predictor import Predictor, load_predictor

_LAZY = {"Predictor": "clickadapt.predictor", "load_predictor": "clickadapt.predictor"}


def __getattr__(name: str) -> Any:
    """Import the predictor on first access (PEP 562), so that ``import clickadapt`` does not load torch."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'clickadapt' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
