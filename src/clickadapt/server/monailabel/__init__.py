"""MONAI Label-compatible endpoints (3D Slicer's MONAILabel module, OHIF) on the server's own model and store.

:class:`~clickadapt.server.monailabel.bridge.MonaiLabelBridge` does the work; the HTTP layer is
:mod:`clickadapt.server.routers.monailabel`.
"""

from clickadapt.server.monailabel.bridge import MODEL_2D, MODEL_3D, MonaiLabelBridge
from clickadapt.server.monailabel.files import VolumeFiles

__all__ = ["MODEL_2D", "MODEL_3D", "MonaiLabelBridge", "VolumeFiles"]
