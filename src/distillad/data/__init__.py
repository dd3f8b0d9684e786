"""Samples, dataset loaders, geometry-aware transforms and the embedded demo set."""
from .samples import Sample, Split, boxes_to_mask, read_image, read_mask
from .transforms import Geometry, Preprocess

__all__ = ["Sample", "Split", "Geometry", "Preprocess", "boxes_to_mask", "read_image", "read_mask"]
