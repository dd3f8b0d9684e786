"""Top-1 and per-class accuracy for the methods that also classify (OneN's defect classes,
MTSD's classification task)."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..errors import DataError


def classification_metrics(y_true: Sequence, y_pred: Sequence, class_names: Sequence[str] | None = None) -> dict:
    """Accuracy, per-class accuracy and confusion matrix.

    y_true: true class of each sample: integer ids 0..C-1, or names when `class_names` is given.
    y_pred: predicted classes (same form as y_true), or a [N, C] array of class scores, in which
        case the top-1 (argmax) class is the prediction.
    class_names: names of the classes in id order. Without it the classes are the sorted
        distinct values of y_true and y_pred, named by str(value).

    Returns {"accuracy": top-1 accuracy, "accuracy_per_class": {name: recall of that class
    (NaN when the class has no sample)}, "confusion": C x C list, rows = true, cols = predicted}.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_pred.ndim == 2:
        if class_names is not None and y_pred.shape[1] != len(class_names):
            raise DataError(f"class scores have {y_pred.shape[1]} columns but {len(class_names)} class names were given")
        y_pred = np.argmax(y_pred, axis=1)
        if class_names is not None and y_true.dtype.kind not in "iub":
            y_pred = np.asarray(class_names, dtype=object)[y_pred]
    if y_true.ndim != 1 or y_pred.ndim != 1 or y_true.size != y_pred.size:
        raise DataError(f"classification metrics need y_true [N] and y_pred [N] or [N, C], got {y_true.shape} "
                        f"and {y_pred.shape}")
    if class_names is None:
        classes = np.unique(np.concatenate([y_true, y_pred]))
        names = [str(c) for c in classes]
        t, p = np.searchsorted(classes, y_true), np.searchsorted(classes, y_pred)
    else:
        names = [str(c) for c in class_names]
        t, p = _to_ids(y_true, names, "y_true"), _to_ids(y_pred, names, "y_pred")
    n_cls = len(names)
    confusion = np.zeros((n_cls, n_cls), dtype=np.int64)
    np.add.at(confusion, (t, p), 1)
    support = confusion.sum(axis=1)
    per_class = {name: (float(confusion[i, i] / support[i]) if support[i] else math.nan)
                 for i, name in enumerate(names)}
    accuracy = float(np.trace(confusion) / t.size) if t.size else math.nan
    return {"accuracy": accuracy, "accuracy_per_class": per_class, "confusion": confusion.tolist()}


def _to_ids(y: np.ndarray, names: list[str], what: str) -> np.ndarray:
    if y.dtype.kind in "iub":
        ids = y.astype(np.int64)
        bad = (ids < 0) | (ids >= len(names))
        if bad.any():
            raise DataError(f"{what}: class ids must lie in 0..{len(names) - 1}, found {ids[bad][:5].tolist()}")
        return ids
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted({str(v) for v in y.tolist()} - set(index))
    if unknown:
        raise DataError(f"{what}: unknown class names {unknown[:5]} (known: {names})")
    return np.array([index[str(v)] for v in y.tolist()], dtype=np.int64)
