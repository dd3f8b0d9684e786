"""Magnetic Tile Surface Defect dataset (MTSD; Huang et al. 2020), as laid out in ../shared/datasets::

    magnetic_tile/MT_<Type>/Imgs/<id>.jpg    grayscale ROI
    magnetic_tile/MT_<Type>/Imgs/<id>.png    its pixel mask, thresholded at 128

Types: Free (defect-free), Blowhole, Break, Crack, Fray, Uneven.

Two tasks (`task=`):

- "unsupervised": train on a seeded `train_fraction` (default 75 %) of MT_Free; test on the
  remaining MT_Free images (label 0) and on every defect image (label 1, with its mask).
  Some MT_Uneven masks are empty: those images are kept as anomalous with an empty mask. Image
  metrics count them as anomalous; pixel metrics see only normal pixels in them (they add to the
  false-positive side, never to the true-positive side), and region metrics (AUPRO) find no
  defect region in them, so they only contribute false positives there too.
- "classification" (OneN, Coscia et al., Sec. 4 "Datasets"): six classes, `class_names =
  ("free", "blowhole", "break", "crack", "fray", "uneven")`, `Sample.class_id` the index; an
  approximately 75 / 25 split within each class (stratified, seeded); train and test both hold
  anomalous samples with their masks (OneN uses masks as supervision).

Normal (MT_Free) samples carry `mask=None`, i.e. an all-normal mask. Pixels are read lazily; the
folders, the image/mask pairing and the counts are checked on loading.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError
from .folders import existing_dir, seeded_split
from .samples import Sample, Split

MTSD_CLASSES = ("free", "blowhole", "break", "crack", "fray", "uneven")


def _list_pairs(root: Path, cls: str) -> list[tuple[Path, Path]]:
    d = root / f"MT_{cls.capitalize()}" / "Imgs"
    existing_dir(d, f"MTSD class folder for {cls!r}")
    pairs = []
    for img in sorted(d.glob("*.jpg")):
        mask = img.with_suffix(".png")
        if not mask.is_file():
            raise DataError(f"{img}: MTSD image has no mask (expected {mask})")
        pairs.append((img, mask))
    if not pairs:
        raise DataError(f"{d}: MTSD class folder contains no .jpg images")
    return pairs


def mtsd(root: str | os.PathLike, task: str = "unsupervised", seed: int = 0, train_fraction: float = 0.75) -> Split:
    """Load MTSD from the `magnetic_tile` folder (see the module docstring for the two tasks)."""
    root = existing_dir(root, "MTSD folder")
    if task not in ("unsupervised", "classification"):
        raise ValueError(f"MTSD task must be 'unsupervised' or 'classification', got {task!r}")
    pairs = {c: _list_pairs(root, c) for c in MTSD_CLASSES}
    cat = "magnetic_tile"

    def sample(cls: str, img: Path, mask: Path) -> Sample:
        i = MTSD_CLASSES.index(cls)
        if i == 0:
            return Sample(str(img), 0, None, "good", cat, 0)
        return Sample(str(img), 1, str(mask), cls, cat, i)

    if task == "unsupervised":
        tr, te = seeded_split(pairs["free"], train_fraction, seed, f"MT_Free images in {root}")
        train = [sample("free", *p) for p in tr]
        test = [sample("free", *p) for p in te]
        for c in MTSD_CLASSES[1:]:
            test += [sample(c, *p) for p in pairs[c]]
        return Split("mtsd", train, test, MTSD_CLASSES)

    train, test = [], []
    for i, c in enumerate(MTSD_CLASSES):
        tr, te = seeded_split(pairs[c], train_fraction, [int(seed), i], f"MT_{c.capitalize()} images in {root}")
        train += [sample(c, *p) for p in tr]
        test += [sample(c, *p) for p in te]
    return Split("mtsd_cls", train, test, MTSD_CLASSES)
