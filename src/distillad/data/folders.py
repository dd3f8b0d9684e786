"""Shared helpers for folder-based loaders and the generic folder layout.

Loaders validate eagerly what is cheap (the folder exists, holds images, every anomalous image
has its mask file) and leave pixel decoding to `Sample.load_image` / `load_mask`, which raise a
`DataError` naming the file when an image cannot be decoded or a mask has the wrong size.

Generic layout (`folder_dataset`)::

    <normal>/            normal images (split into train / test with a seeded fraction,
                         unless `test_normal` names a separate folder of normal test images)
    <anomalous_1>/ ...   anomalous test images; the folder name is the defect type
    <masks>/             optional: `<stem><suffix>.<ext>` or `<defect type>/<stem><suffix>.<ext>`

Anomalous images without a mask folder get `mask=None` (label 1, no pixel ground truth: pixel
metrics are not defined for them); when a mask folder is given, every anomalous image must
have its mask.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from .samples import Sample, Split

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: mask suffixes tried, in this order, by mask_suffix="auto" (MVTec AD: "_mask"; the hazelnut
#: subset in ../shared and BTAD: same stem)
AUTO_MASK_SUFFIXES = ("_mask", "")


def is_image_file(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def existing_dir(path: str | os.PathLike, what: str = "folder") -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{p}: {what} not found")
    if not p.is_dir():
        raise DataError(f"{p}: {what} is not a directory")
    return p


def list_images(folder: str | os.PathLike, what: str = "image folder", allow_empty: bool = False) -> list[Path]:
    """Image files directly inside `folder`, sorted by name; an error when there are none."""
    d = existing_dir(folder, what)
    files = sorted(p for p in d.iterdir() if is_image_file(p))
    if not files and not allow_empty:
        raise DataError(f"{d}: {what} contains no images (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return files


def find_mask(image: Path, mask_dir: Path, suffix: str | Sequence[str] = "auto") -> Path:
    """The mask file of `image` in `mask_dir`: `<stem><suffix>.<any image extension>`.

    `suffix="auto"` tries "_mask" then the bare stem. Raises a DataError naming the image and
    the expected mask path when nothing matches.
    """
    suffixes = AUTO_MASK_SUFFIXES if suffix == "auto" else ((suffix,) if isinstance(suffix, str) else tuple(suffix))
    tried = []
    for suf in suffixes:
        # the usual case first: a PNG, then the image's own extension, then any other
        for ext in (".png", image.suffix, *IMAGE_EXTENSIONS):
            cand = mask_dir / f"{image.stem}{suf}{ext}"
            if cand.is_file() and cand.resolve() != image.resolve():  # never the image itself
                return cand
        tried.append(str(mask_dir / f"{image.stem}{suf}.png"))
    raise DataError(f"{image}: anomalous image has no mask (expected {' or '.join(tried)})")


def seeded_split(items: Sequence, fraction: float, seed: int, what: str = "items") -> tuple[list, list]:
    """Deterministic shuffle of `items` (in their given order) -> (first `fraction`, rest).

    At least one item ends up on each side when there are two or more items.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"train fraction must lie in (0, 1), got {fraction}")
    items = list(items)
    if len(items) < 2:
        raise DataError(f"need at least 2 {what} to split into train and test, found {len(items)}")
    order = np.random.default_rng(seed).permutation(len(items))
    n = int(round(fraction * len(items)))
    n = min(max(n, 1), len(items) - 1)
    return [items[i] for i in sorted(order[:n])], [items[i] for i in sorted(order[n:])]


class LazyMask:
    """A mask read on demand from one or several files (their union).

    `Sample.load_mask` calls `np.asarray(sample.mask)`, which lands in `__array__`. Used where
    the plain `>= 128` rule of `read_mask` does not fit: VisA masks store defect indices (any
    non-zero value is anomalous), MVTec LOCO has one file per defect.
    """

    def __init__(self, paths: Sequence[str | os.PathLike], rule: str = "nonzero"):
        if rule not in ("nonzero", "threshold128"):
            raise ValueError(f"unknown mask rule {rule!r}")
        self.paths = tuple(Path(p) for p in paths)
        self.rule = rule

    def __repr__(self) -> str:
        return f"LazyMask({[str(p) for p in self.paths]}, rule={self.rule!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, LazyMask) and (self.paths, self.rule) == (other.paths, other.rule)

    def __hash__(self) -> int:
        return hash((self.paths, self.rule))

    def __array__(self, dtype=None, copy=None):
        out = None
        for p in self.paths:
            m = _read_mask_values(p)
            m = m != 0 if self.rule == "nonzero" else m >= 128
            if out is not None and m.shape != out.shape:
                raise DataError(f"{p}: mask is {m.shape[1]}x{m.shape[0]} (WxH) but {self.paths[0]} is "
                                f"{out.shape[1]}x{out.shape[0]}")
            out = m if out is None else (out | m)
        if out is None:
            raise DataError("LazyMask without files")
        return out if dtype is None else out.astype(dtype)


def _read_mask_values(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: mask file not found")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                return (np.asarray(im).astype(np.float64) / 257.0).round().astype(np.uint8)
            if im.mode == "P":  # palette masks: the index is the value (VisA stores class indices)
                return np.asarray(im)
            return np.asarray(im.convert("L"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot read mask ({e})") from None


def _as_list(x) -> list:
    if x is None:
        return []
    if isinstance(x, (str, os.PathLike)):
        return [x]
    return list(x)


def folder_dataset(normal: str | os.PathLike, anomalous: str | os.PathLike | Iterable = (), masks=None, *,
                   test_normal=None, train_fraction: float = 0.75, seed: int = 0, mask_suffix="auto",
                   category: str = "", name: str | None = None) -> Split:
    """Generic layout (see the module docstring): a normal folder, anomalous folders, masks.

    normal: folder of normal images. Without `test_normal`, a seeded `train_fraction` of them
    trains and the rest are normal test images; with it, all of `normal` trains.
    anomalous: one folder or a list of folders (each folder name becomes `defect_type`).
    masks: optional folder of masks, looked up as `<masks>/<defect>/<stem><suffix>.*` then
    `<masks>/<stem><suffix>.*`; every anomalous image must then have one.
    """
    normal_dir = existing_dir(normal, "normal image folder")
    normals = list_images(normal_dir, "normal image folder")
    if test_normal is not None:
        train_files, test_normals = normals, list_images(test_normal, "normal test image folder")
    else:
        train_files, test_normals = seeded_split(normals, train_fraction, seed, f"normal images in {normal_dir}")
    category = category or normal_dir.parent.name or normal_dir.name
    mask_root = existing_dir(masks, "mask folder") if masks is not None else None

    train = [Sample(str(p), 0, None, "good", category) for p in train_files]
    test = [Sample(str(p), 0, None, "good", category) for p in test_normals]
    for folder in _as_list(anomalous):
        d = existing_dir(folder, "anomalous image folder")
        for p in list_images(d, "anomalous image folder"):
            mask = None
            if mask_root is not None:
                sub = mask_root / d.name
                mask = str(find_mask(p, sub if sub.is_dir() else mask_root, mask_suffix))
            test.append(Sample(str(p), 1, mask, d.name, category))
    return Split(name or category, train, test)
