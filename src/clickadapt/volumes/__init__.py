"""Volumes: click on any slice of a NIfTI or NRRD volume in its own voxel order, get labels in its geometry.

- :mod:`~clickadapt.volumes.io`: read a volume as stored, write a label with its exact geometry.
- :mod:`~clickadapt.volumes.dicom`: a folder's DICOM series (one file per slice) as one volume.
- :mod:`~clickadapt.volumes.geometry`: map file voxels onto the upright slices the network was trained on.
- :mod:`~clickadapt.volumes.session`: :class:`VolumeSession`, the 2D predictor driven slice by slice.
- :mod:`~clickadapt.volumes.slice_clicks`: its open slice, clicks and undo.
- :mod:`~clickadapt.volumes.history`: its clicks restored after a restart or taken out again.
- :mod:`~clickadapt.volumes.slices`: a slice as the network sees it, and one forward of it.
- :mod:`~clickadapt.volumes.records`: what the session keeps (clicks, slice records, undo outcomes).
- :mod:`~clickadapt.volumes.propagation`: carry an accepted slice's lesion to its neighbours.
- :mod:`~clickadapt.volumes.simulated`: a simulated user for whole volumes (benchmarks, tests).
"""

from clickadapt.volumes.geometry import ViewPoint, VolumeOrientation
from clickadapt.volumes.io import Volume, read_volume, write_label
from clickadapt.volumes.propagation import PropagationConfig, PropagationReport
from clickadapt.volumes.records import SliceRecord, VolumeClick
from clickadapt.volumes.session import VolumeSession

__all__ = [
    "PropagationConfig",
    "PropagationReport",
    "SliceRecord",
    "ViewPoint",
    "Volume",
    "VolumeClick",
    "VolumeOrientation",
    "VolumeSession",
    "read_volume",
    "write_label",
]
