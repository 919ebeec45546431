"""Datasets and readers: fundus optic disc/cup photographs and brain MRI lesion slices."""

from clickadapt.data.sample import Sample

__all__ = ["Sample"]
