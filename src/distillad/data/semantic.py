"""Semantic anomaly detection: class-labelled images turned into anomaly-detection splits.

Sources of class-labelled images (`LabelledImages`, with the official train / test parts):
- `fashion_mnist(root)`: the gzipped IDX files as Debian's `dataset-fashion-mnist` installs them
  (`/usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`), read
  with numpy (no download);
- `image_folder(root)`: an ImageFolder tree `<root>/<class>/*.png`, or `<root>/train/<class>/`
  and `<root>/test/<class>/` (the given train / test parts); without `train/` and `test/`, each
  class is split with a seeded `train_fraction`;
- `from_arrays(...)`: in-memory arrays (N x H x W or N x H x W x C) with integer labels.

Splits (every sample's `category` is the dataset's name; `class_id` is the original class index,
`Split.class_names` the dataset's class names; `defect_type` is "good" for normal samples and the
class name otherwise). Semantic samples have no masks (`mask=None`): pixel metrics are not
defined for them, only image metrics.
- `one_vs_rest(data, normal)`: one class normal (training on its official training images),
  every other class anomalous; the test set is the official test split, all classes.
- `semantic_split(data, "A" | "B" | "C" | "D")`: the multi-class semantic setting of the
  dual-student paper (Park, Seo, Kim; Sec. 4 "Class settings" and appendix C.1, following UniAD):
  half of the classes are normal, the rest anomalous. Appendix C.1 gives the normal classes:

  ======  ==============================  ========================================  ============================
  split   10 classes (CIFAR-10, FMNIST)   20 classes (CIFAR-100, 20 coarse classes)  View (6 scene classes)
  ======  ==============================  ========================================  ============================
  A       {0, 1, 2, 3, 4}                 {0, 1, ..., 9}                             {buildings, forest, glacier}
  B       {5, 6, 7, 8, 9}                 {10, 11, ..., 19}                          {mountain, sea, street}
  C       {0, 2, 4, 6, 8}                 {0, 2, ..., 18}                            {buildings, glacier, sea}
  D       {1, 3, 5, 7, 9}                 {1, 3, ..., 19}                            {forest, mountain, street}
  ======  ==============================  ========================================  ============================

  The indices are the datasets' own label indices (Fashion-MNIST: 0 T-shirt/top, 1 Trouser,
  2 Pullover, 3 Dress, 4 Coat, 5 Sandal, 6 Shirt, 7 Sneaker, 8 Bag, 9 Ankle boot; CIFAR-10:
  0 airplane, 1 automobile, 2 bird, 3 cat, 4 deer, 5 dog, 6 frog, 7 horse, 8 ship, 9 truck).
  The paper trains one model on all normal classes together and reports the image AUROC per
  split (its Tab. 15-17); the test set is the official test split.

`train_per_class` / `test_per_class` optionally keep a seeded subset of each class (for quick
runs on small machines; the paper uses everything).
"""
from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError
from .folders import existing_dir, list_images, seeded_split
from .samples import Sample, Split

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
VIEW_CLASSES = ("buildings", "forest", "glacier", "mountain", "sea", "street")
DEFAULT_FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"

#: appendix C.1 of the dual-student paper: normal classes of each multi-class split
SEMANTIC_SPLITS = {
    10: {"A": (0, 1, 2, 3, 4), "B": (5, 6, 7, 8, 9), "C": (0, 2, 4, 6, 8), "D": (1, 3, 5, 7, 9)},
    20: {"A": tuple(range(0, 10)), "B": tuple(range(10, 20)), "C": tuple(range(0, 20, 2)),
         "D": tuple(range(1, 20, 2))},
}
VIEW_SPLITS = {"A": ("buildings", "forest", "glacier"), "B": ("mountain", "sea", "street"),
               "C": ("buildings", "glacier", "sea"), "D": ("forest", "mountain", "street")}


@dataclass
class LabelledImages:
    """Class-labelled images with their train / test parts. Images are an array (N x H x W
    [x C]) or a list of file paths; labels an int array of class indices into `class_names`."""

    name: str
    class_names: tuple[str, ...]
    train_images: Sequence
    train_labels: np.ndarray
    test_images: Sequence
    test_labels: np.ndarray

    def __post_init__(self):
        self.train_labels = np.asarray(self.train_labels, dtype=np.int64)
        self.test_labels = np.asarray(self.test_labels, dtype=np.int64)
        for part, imgs, labels in (("train", self.train_images, self.train_labels),
                                   ("test", self.test_images, self.test_labels)):
            if len(imgs) != len(labels):
                raise DataError(f"{self.name}: {part} part has {len(imgs)} images but {len(labels)} labels")
            if len(labels) and (labels.min() < 0 or labels.max() >= len(self.class_names)):
                raise DataError(f"{self.name}: {part} labels outside 0..{len(self.class_names) - 1}")

    def class_index(self, c: int | str) -> int:
        if isinstance(c, (int, np.integer)):
            if not 0 <= c < len(self.class_names):
                raise DataError(f"{self.name}: class index {c} outside 0..{len(self.class_names) - 1}")
            return int(c)
        if isinstance(c, str) and c.strip().lstrip("-").isdigit():
            return self.class_index(int(c))
        lowered = [n.lower() for n in self.class_names]
        if isinstance(c, str) and c.lower() in lowered:
            return lowered.index(c.lower())
        raise DataError(f"{self.name}: unknown class {c!r} (classes: {', '.join(self.class_names)})")


# ---------------------------------------------------------------- sources

def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzipped) of unsigned bytes into a numpy array."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: IDX file not found")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read IDX file ({e})") from None
    if len(data) < 4:
        raise DataError(f"{path}: not an IDX file (too short)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08 or ndim < 1:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (magic {data[:4].hex()})")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{path}: IDX header says {shape} ({int(np.prod(shape))} bytes) but the file holds "
                        f"{body.size} bytes")
    return body.reshape(shape)


def fashion_mnist(root: str | os.PathLike = DEFAULT_FASHION_MNIST_ROOT, name: str = "fmnist") -> LabelledImages:
    """Fashion-MNIST from its (gzipped) IDX files: 60000 train / 10000 test, 28 x 28 grayscale."""
    root = existing_dir(root, "Fashion-MNIST folder")

    def find(stem: str) -> Path:
        for cand in (root / f"{stem}.gz", root / stem):
            if cand.is_file():
                return cand
        raise DataError(f"{root}: Fashion-MNIST file {stem}.gz not found")

    parts = {}
    for part, prefix in (("train", "train"), ("test", "t10k")):
        parts[part] = (read_idx(find(f"{prefix}-images-idx3-ubyte")), read_idx(find(f"{prefix}-labels-idx1-ubyte")))
    return LabelledImages(name, FASHION_MNIST_CLASSES, parts["train"][0], parts["train"][1],
                          parts["test"][0], parts["test"][1])


def image_folder(root: str | os.PathLike, *, train_fraction: float = 0.75, seed: int = 0,
                 name: str | None = None) -> LabelledImages:
    """An ImageFolder tree: `<root>/train/<class>/`, `<root>/test/<class>/` (used as given) or
    `<root>/<class>/` (each class split with a seeded `train_fraction`). Classes are sorted by
    name; an empty class folder is an error naming it."""
    root = existing_dir(root, "image folder tree")
    name = name or root.name
    if (root / "train").is_dir() and (root / "test").is_dir():
        classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
        if not classes:
            raise DataError(f"{root / 'train'}: no class folders")
        parts = {}
        for part in ("train", "test"):
            imgs, labels = [], []
            for i, c in enumerate(classes):
                files = list_images(root / part / c, "class folder")
                imgs += [str(p) for p in files]
                labels += [i] * len(files)
            parts[part] = (imgs, labels)
        return LabelledImages(name, tuple(classes), *parts["train"], *parts["test"])
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise DataError(f"{root}: no class folders")
    tr_i, tr_l, te_i, te_l = [], [], [], []
    for i, c in enumerate(classes):
        tr, te = seeded_split(list_images(root / c, "class folder"), train_fraction, [int(seed), i],
                              f"images in class folder {root / c}")
        tr_i += [str(p) for p in tr]
        tr_l += [i] * len(tr)
        te_i += [str(p) for p in te]
        te_l += [i] * len(te)
    return LabelledImages(name, tuple(classes), tr_i, tr_l, te_i, te_l)


def from_arrays(train_images, train_labels, test_images, test_labels, class_names: Sequence[str] | None = None,
                name: str = "arrays") -> LabelledImages:
    """In-memory class-labelled images (N x H x W or N x H x W x C, uint8 or floats in [0, 1])."""
    train_images, test_images = np.asarray(train_images), np.asarray(test_images)
    for part, a in (("train", train_images), ("test", test_images)):
        if a.ndim not in (3, 4):
            raise DataError(f"{name}: {part} images must be N x H x W or N x H x W x C, got shape {a.shape}")
    if class_names is None:
        n = int(max(np.max(train_labels, initial=-1), np.max(test_labels, initial=-1))) + 1
        class_names = tuple(str(i) for i in range(n))
    return LabelledImages(name, tuple(class_names), train_images, train_labels, test_images, test_labels)


# ---------------------------------------------------------------- splits

def one_vs_rest(data: LabelledImages, normal: int | str, *, train_per_class: int | None = None,
                test_per_class: int | None = None, seed: int = 0) -> Split:
    """One class normal, all others anomalous (train: the normal class's training images)."""
    i = data.class_index(normal)
    return normal_vs_rest(data, (i,), f"{data.name}/{i}", train_per_class=train_per_class,
                          test_per_class=test_per_class, seed=seed)


def semantic_split(data: LabelledImages, which: str, *, train_per_class: int | None = None,
                   test_per_class: int | None = None, seed: int = 0) -> Split:
    """Multi-class semantic split A-D of the dual-student paper (appendix C.1; see module docstring)."""
    key = str(which).strip().upper()
    if key not in ("A", "B", "C", "D"):
        raise ValueError(f"semantic split must be one of A, B, C, D, got {which!r}")
    if tuple(n.lower() for n in data.class_names) == VIEW_CLASSES:
        normal = tuple(VIEW_CLASSES.index(c) for c in VIEW_SPLITS[key])
    elif len(data.class_names) in SEMANTIC_SPLITS:
        normal = SEMANTIC_SPLITS[len(data.class_names)][key]
    else:
        raise DataError(f"{data.name}: the paper's splits A-D are defined for 10 classes (CIFAR-10, "
                        f"Fashion-MNIST), 20 (CIFAR-100 coarse) and View; this set has "
                        f"{len(data.class_names)} classes (use normal_vs_rest with your own classes)")
    return normal_vs_rest(data, normal, f"{data.name}/{key}", train_per_class=train_per_class,
                          test_per_class=test_per_class, seed=seed)


def normal_vs_rest(data: LabelledImages, normal: Sequence[int | str], name: str | None = None, *,
                   train_per_class: int | None = None, test_per_class: int | None = None, seed: int = 0) -> Split:
    """The given classes are normal, the others anomalous."""
    normal_ids = sorted({data.class_index(c) for c in normal})
    if not normal_ids or len(normal_ids) == len(data.class_names):
        raise DataError(f"{data.name}: the normal classes must be a non-empty proper subset of the classes")
    name = name or f"{data.name}/{'-'.join(map(str, normal_ids))}"

    def pick(labels: np.ndarray, classes, limit, salt) -> np.ndarray:
        idx = []
        for c in classes:
            ci = np.flatnonzero(labels == c)
            if limit is not None and len(ci) > limit:
                rng = np.random.default_rng([int(seed), salt, int(c)])
                ci = np.sort(rng.choice(ci, size=int(limit), replace=False))
            idx.append(ci)
        return np.sort(np.concatenate(idx)) if idx else np.zeros(0, dtype=np.int64)

    def sample(images, labels, i, part) -> Sample:
        c = int(labels[i])
        img = images[i]
        label = 0 if c in normal_ids else 1
        meta = {"name": f"{data.name}/{part}/{i}", "index": int(i), "class_name": data.class_names[c]}
        image = img if isinstance(img, np.ndarray) else str(img)
        return Sample(image, label, None, "good" if label == 0 else data.class_names[c], data.name, c, meta=meta)

    tr_idx = pick(data.train_labels, normal_ids, train_per_class, 0)
    for c in normal_ids:
        if not np.any(data.train_labels[tr_idx] == c):
            raise DataError(f"{data.name}: normal class {data.class_names[c]!r} has no training images")
    te_idx = pick(data.test_labels, range(len(data.class_names)), test_per_class, 1)
    train = [sample(data.train_images, data.train_labels, i, "train") for i in tr_idx]
    test = [sample(data.test_images, data.test_labels, i, "test") for i in te_idx]
    if not any(s.label == 0 for s in test) or not any(s.label == 1 for s in test):
        raise DataError(f"{data.name}: test part lacks normal or anomalous images for split {name}")
    return Split(name, train, test, tuple(data.class_names))
