"""Samples, dataset loaders, geometry-aware transforms and the embedded demo set.

`open_dataset("kind:path?option=value")` is the one entry point the CLI uses (see `data.open`);
the loaders behind it are importable directly.
"""
from .samples import Sample, Split, boxes_to_mask, read_image, read_mask
from .transforms import Geometry, Preprocess
from .deeppcb import deeppcb
from .demo import DEMO_CLASSES, demo_dataset
from .fewshot import few_shot, multiclass
from .folders import folder_dataset
from .mtsd import MTSD_CLASSES, mtsd
from .mvtec import btad, mvtec, mvtec_loco, visa
from .open import open_dataset
from .semantic import (CIFAR10_CLASSES, FASHION_MNIST_CLASSES, LabelledImages, fashion_mnist, from_arrays,
                       image_folder, normal_vs_rest, one_vs_rest, semantic_split)

__all__ = ["Sample", "Split", "Geometry", "Preprocess", "boxes_to_mask", "read_image", "read_mask",
           "open_dataset", "mvtec", "btad", "mvtec_loco", "visa", "folder_dataset", "mtsd", "MTSD_CLASSES",
           "deeppcb", "fashion_mnist", "image_folder", "from_arrays", "LabelledImages", "one_vs_rest",
           "normal_vs_rest", "semantic_split", "FASHION_MNIST_CLASSES", "CIFAR10_CLASSES", "few_shot",
           "multiclass", "demo_dataset", "DEMO_CLASSES"]
