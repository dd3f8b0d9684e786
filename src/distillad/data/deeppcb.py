"""DeepPCB (Tang et al. 2019), as laid out in ../shared/datasets::

    PCBData/group<N>/<N>/<id>_test.jpg    defective 640 x 640 binarised crop (3-12 defects)
    PCBData/group<N>/<N>/<id>_temp.jpg    its aligned defect-free template
    PCBData/group<N>/<N>_not/<id>.txt     one "x1 y1 x2 y2 type" line per defect (spaces or commas)

Defect types: 1 open, 2 short, 3 mousebite, 4 spur, 5 spurious copper, 6 pin-hole. Boxes are the
only ground truth: `Sample.boxes` holds them and `load_mask` gives box masks (weak masks, as in
OneN's weak supervision; box-level pixel metrics are coarse, reports should say so).
`Sample.meta["defect_types"]` lists the defect names per box (and `"type_ids"` the integers).

Tasks (`task=`):

- "unsupervised": train on a seeded `train_fraction` (default 75 %) of the templates; test on
  the held-out templates (label 0) and on the defective test images (label 1). With
  `test_pairs="all"` (default, as ../shared/datasets/README.md describes) every test image is
  used, so most of them are aligned to a template seen in training, which favours methods that
  memorise normal patches. `test_pairs="held_out"` keeps only test images whose own template was
  held out (harder, about a quarter of the defective images).
- "classification": DeepPCB is not a per-image class problem (every test image holds several
  defects of several types), so what OneN gets here is two classes, `class_names =
  ("normal", "defective")`: templates are class 0, test images class 1 with their box masks
  (OneN's weak masks). The split is seeded and by pair (a template and its test image always
  land on the same side), `train_fraction` of the pairs training.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import DataError
from .folders import existing_dir, seeded_split
from .samples import Sample, Split

PCB_DEFECT_TYPES = {1: "open", 2: "short", 3: "mousebite", 4: "spur", 5: "spurious_copper", 6: "pin_hole"}
PCB_CLASSES = ("normal", "defective")


def read_boxes(path: Path) -> tuple[tuple[tuple[int, int, int, int], ...], tuple[int, ...]]:
    """Parse a DeepPCB annotation file -> (boxes (x1, y1, x2, y2), type ids)."""
    boxes, types = [], []
    try:
        text = path.read_text()
    except OSError as e:
        raise DataError(f"{path}: cannot read annotation file ({e})") from None
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = [p for p in re.split(r"[,\s]+", line.strip()) if p]
        try:
            x1, y1, x2, y2, t = (int(float(p)) for p in parts)
        except ValueError:
            raise DataError(f"{path} line {n}: expected 'x1 y1 x2 y2 type', got {line.strip()!r}") from None
        if t not in PCB_DEFECT_TYPES:
            raise DataError(f"{path} line {n}: unknown defect type {t} (1-6 expected)")
        boxes.append((x1, y1, x2, y2))
        types.append(t)
    if not boxes:
        raise DataError(f"{path}: annotation file lists no defects")
    return tuple(boxes), tuple(types)


def _find_base(root: Path) -> Path:
    for base in (root, root / "PCBData"):
        if base.is_dir() and any(p.is_dir() and p.name.startswith("group") for p in base.iterdir()):
            return base
    raise DataError(f"{root}: no DeepPCB group folders (PCBData/group<N>/) found")


def deeppcb(root: str | os.PathLike, task: str = "unsupervised", seed: int = 0, train_fraction: float = 0.75,
            test_pairs: str = "all", groups: tuple[str, ...] | None = None) -> Split:
    """Load DeepPCB (see the module docstring). `groups` restricts to some group names, e.g. ("group12000",)."""
    root = existing_dir(root, "DeepPCB folder")
    if task not in ("unsupervised", "classification"):
        raise ValueError(f"DeepPCB task must be 'unsupervised' or 'classification', got {task!r}")
    if test_pairs not in ("all", "held_out"):
        raise ValueError(f"test_pairs must be 'all' or 'held_out', got {test_pairs!r}")
    base = _find_base(root)
    templates: list[tuple[str, Path]] = []   # (pair id, template path)
    defective: dict[str, Sample] = {}         # pair id -> test-image sample
    for g in sorted(p for p in base.iterdir() if p.is_dir() and p.name.startswith("group")):
        if groups and g.name not in groups:
            continue
        n = g.name[len("group"):]
        img_dir, ann_dir = g / n, g / f"{n}_not"
        existing_dir(img_dir, "DeepPCB image folder")
        for t in sorted(img_dir.glob("*_temp.jpg")):
            templates.append((f"{g.name}/{t.name[:-len('_temp.jpg')]}", t))
        for t in sorted(img_dir.glob("*_test.jpg")):
            pid = t.name[: -len("_test.jpg")]
            ann = ann_dir / f"{pid}.txt"
            if not ann.is_file():
                raise DataError(f"{t}: DeepPCB test image has no annotation (expected {ann})")
            boxes, types = read_boxes(ann)
            defective[f"{g.name}/{pid}"] = Sample(
                str(t), 1, None, "defect", "deeppcb", 1, boxes,
                {"defect_types": tuple(PCB_DEFECT_TYPES[i] for i in types), "type_ids": types,
                 "annotation": str(ann)})
    if groups and not templates and not defective:
        raise DataError(f"{base}: none of the groups {list(groups)} found")
    if not templates:
        raise DataError(f"{base}: no DeepPCB template images (*_temp.jpg) found")
    if not defective:
        raise DataError(f"{base}: no DeepPCB test images (*_test.jpg) found")

    def normal(path: Path) -> Sample:
        return Sample(str(path), 0, None, "good", "deeppcb", 0)

    if task == "unsupervised":
        tr, te = seeded_split(templates, train_fraction, seed, f"DeepPCB templates in {base}")
        held_out = {pid for pid, _ in te}
        test = [normal(p) for _, p in te]
        test += [s for pid, s in sorted(defective.items()) if test_pairs == "all" or pid in held_out]
        return Split("deeppcb", [normal(p) for _, p in tr], test, PCB_CLASSES)

    pair_ids = sorted({pid for pid, _ in templates} | set(defective))
    tr_ids, _ = seeded_split(pair_ids, train_fraction, seed, f"DeepPCB pairs in {base}")
    tr_ids = set(tr_ids)
    train, test = [], []
    for pid, p in templates:
        (train if pid in tr_ids else test).append(normal(p))
    for pid, s in sorted(defective.items()):
        (train if pid in tr_ids else test).append(s)
    return Split("deeppcb_cls", train, test, PCB_CLASSES)
