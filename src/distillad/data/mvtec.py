"""Industrial benchmarks in their published layouts: MVTec AD, BTAD, MVTec LOCO, VisA.

MVTec AD (one category folder)::

    train/good/*.png            normal training images
    test/good/*.png             normal test images
    test/<defect>/*.png         anomalous test images
    ground_truth/<defect>/<stem>_mask.png   binary masks (0 / 255)

`mask_suffix="auto"` accepts `<stem>_mask.*` (MVTec AD) or `<stem>.*` (the hazelnut subset in
../shared, BTAD). Every anomalous image must have its mask: a missing one is an error naming the
image and the path that was expected. Pixels are read lazily.

BTAD: the same layout with `ok` / `ko` instead of `good` / defect folders, masks with the image
stem (PNG or BMP). MVTec LOCO: `train/good`, `validation/good`, `test/{good,logical_anomalies,
structural_anomalies}` and one mask *folder* per anomalous image,
`ground_truth/<type>/<stem>/000.png, 001.png, ...` (one file per defect; the mask is their union,
any non-zero pixel anomalous). VisA: images and masks anywhere below the root, listed by the
official split CSV (`split_csv/1cls.csv`: object,split,label,image,mask); VisA masks store the
defect index, so any non-zero pixel is anomalous.

A path holding several category folders (each with `train/` and `test/`) loads them all as one
multi-class split (`Sample.category` = folder name), as in the dual-student paper's multi-class
setting.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

from ..errors import DataError
from .folders import LazyMask, existing_dir, find_mask, list_images
from .samples import Sample, Split

MVTEC_CATEGORIES = ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill",
                    "screw", "tile", "toothbrush", "transistor", "wood", "zipper")
LOCO_CATEGORIES = ("breakfast_box", "juice_bottle", "pushpins", "screw_bag", "splicing_connectors")
VISA_CATEGORIES = ("candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2", "pcb1",
                   "pcb2", "pcb3", "pcb4", "pipe_fryum")


def is_category_folder(path: Path) -> bool:
    return (path / "train").is_dir() and (path / "test").is_dir()


def category_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and is_category_folder(p))


def _per_category(root, loader, what: str, **kw) -> Split:
    """`loader` on a category folder, or on every category folder below `root` (multi-class)."""
    from .fewshot import multiclass

    root = existing_dir(root, f"{what} folder")
    if is_category_folder(root):
        return loader(root, **kw)
    cats = category_folders(root)
    if not cats:
        raise DataError(f"{root}: not a {what} category folder (no train/ and test/ inside) and holds no "
                        "category folders")
    return multiclass([loader(c, **kw) for c in cats], name=root.name)


def mvtec(root: str | os.PathLike, *, mask_suffix="auto", good: str = "good", category: str | None = None) -> Split:
    """MVTec AD category folder (or a root of category folders -> multi-class split)."""
    return _per_category(root, _mvtec_category, "MVTec AD", mask_suffix=mask_suffix, good=good,
                         category=category)


def _mvtec_category(root: Path, *, mask_suffix="auto", good="good", category=None) -> Split:
    cat = category or root.name
    train = [Sample(str(p), 0, None, "good", cat) for p in list_images(root / "train" / good, "training folder")]
    test_dir = existing_dir(root / "test", "test folder")
    test = []
    defect_dirs = sorted(d for d in test_dir.iterdir() if d.is_dir())
    if not defect_dirs:
        raise DataError(f"{test_dir}: test folder has no sub-folders ({good}/ and defect folders expected)")
    for d in defect_dirs:
        files = list_images(d, "test image folder")
        if d.name == good:
            test += [Sample(str(p), 0, None, "good", cat) for p in files]
            continue
        mask_dir = root / "ground_truth" / d.name
        if not mask_dir.is_dir():
            raise DataError(f"{d}: defect folder has no mask folder (expected {mask_dir})")
        test += [Sample(str(p), 1, str(find_mask(p, mask_dir, mask_suffix)), d.name, cat) for p in files]
    return Split(cat, train, test)


def btad(root: str | os.PathLike) -> Split:
    """BTAD product folder (`01`, `02`, `03`) or the root holding them (multi-class)."""
    return _per_category(root, _mvtec_category, "BTAD", mask_suffix="", good="ok")


def mvtec_loco(root: str | os.PathLike, *, include_validation: bool = False) -> Split:
    """MVTec LOCO category folder (or root of them). `include_validation` adds `validation/good`
    to the training images (the benchmark keeps it apart for threshold / early-stopping use)."""
    return _per_category(root, _loco_category, "MVTec LOCO", include_validation=include_validation)


def _loco_category(root: Path, *, include_validation=False) -> Split:
    cat = root.name
    train_files = list_images(root / "train" / "good", "training folder")
    if include_validation:
        train_files += list_images(root / "validation" / "good", "validation folder")
    train = [Sample(str(p), 0, None, "good", cat) for p in train_files]
    test = [Sample(str(p), 0, None, "good", cat) for p in list_images(root / "test" / "good", "test folder")]
    for d in sorted(d for d in existing_dir(root / "test", "test folder").iterdir() if d.is_dir() and d.name != "good"):
        for p in list_images(d, "test image folder"):
            gt = root / "ground_truth" / d.name / p.stem
            files = list_images(gt, "mask folder", allow_empty=True) if gt.is_dir() else []
            if not files:
                raise DataError(f"{p}: anomalous image has no mask (expected mask files in {gt}/)")
            test.append(Sample(str(p), 1, LazyMask(files, "nonzero"), d.name, cat))
    return Split(cat, train, test)


def visa(root: str | os.PathLike, split_csv: str | os.PathLike | None = None, *,
         categories: tuple[str, ...] | None = None) -> Split:
    """VisA through its split CSV (default `<root>/split_csv/1cls.csv`; paths in it are relative
    to `root`). All objects in the CSV (or `categories`) form one split; one object -> one category."""
    from .fewshot import multiclass

    root = existing_dir(root, "VisA folder")
    csv_path = Path(split_csv) if split_csv is not None else root / "split_csv" / "1cls.csv"
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: VisA split CSV not found")
    per_cat: dict[str, tuple[list, list]] = {}
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        need = {"object", "split", "label", "image", "mask"}
        if not reader.fieldnames or not need <= set(reader.fieldnames):
            raise DataError(f"{csv_path}: expected columns {sorted(need)}, found {reader.fieldnames}")
        for i, row in enumerate(reader, start=2):
            cat = row["object"]
            if categories and cat not in categories:
                continue
            img = root / row["image"]
            if not img.is_file():
                raise DataError(f"{csv_path} line {i}: image {img} not found")
            train, test = per_cat.setdefault(cat, ([], []))
            anomalous = row["label"].strip().lower() not in ("normal", "good")
            mask = None
            if anomalous:
                if not row["mask"]:
                    raise DataError(f"{csv_path} line {i}: anomalous image {img} has no mask entry")
                m = root / row["mask"]
                if not m.is_file():
                    raise DataError(f"{img}: anomalous image has no mask (expected {m})")
                mask = LazyMask([m], "nonzero")
            s = Sample(str(img), int(anomalous), mask, "bad" if anomalous else "good", cat)
            split = row["split"].strip().lower()
            if split == "train":
                if anomalous:
                    raise DataError(f"{csv_path} line {i}: anomalous image in the train split (use the 1cls CSV)")
                train.append(s)
            elif split == "test":
                test.append(s)
            else:
                raise DataError(f"{csv_path} line {i}: unknown split {row['split']!r}")
    if not per_cat:
        raise DataError(f"{csv_path}: no rows{' for ' + ', '.join(categories) if categories else ''}")
    splits = [Split(c, tr, te) for c, (tr, te) in sorted(per_cat.items())]
    for s in splits:
        if not s.train:
            raise DataError(f"{csv_path}: object {s.name!r} has no training images")
    return splits[0] if len(splits) == 1 else multiclass(splits, name="visa")
