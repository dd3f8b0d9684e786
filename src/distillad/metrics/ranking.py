"""Threshold-free detection metrics: AUROC, average precision (AP) and F1-max, exact.

One routine serves image scores and pixel scores alike: given the negatives' scores sorted and
the positives' scores, every quantity is a count of negatives above each positive score, found
by binary search (no argsort of the negatives, nothing quadratic), so 1e8 pixels cost one
sort (of int32 order keys, see `distillad.metrics.pixels`).

- AUROC: the Mann-Whitney statistic, P(pos > neg) + 0.5 P(pos == neg), which equals the area
  under the ROC curve with ties joined by straight lines (sklearn's `roc_auc_score`).
- AP: sum over distinct thresholds of (recall step) x precision, sklearn's
  `average_precision_score` (no interpolation).
- F1-max: the largest F1 = 2 P R / (P + R) over all thresholds of the precision-recall curve
  (anomalib's F1Max). It is reached at a threshold equal to some positive score, the only
  thresholds evaluated here.

Degenerate input (one class only) gives NaN and a logged warning, never an exception.
"""
from __future__ import annotations

import logging
import math
from typing import Sequence

import numpy as np

from ..errors import DataError
from .pixels import gather_pixels

log = logging.getLogger(__name__)

IMAGE_KEYS = ("image_auroc", "image_ap", "image_f1_max")
PIXEL_KEYS = ("pixel_auroc", "pixel_ap", "pixel_f1_max")


def ranking_metrics(negatives_sorted: np.ndarray, positives: np.ndarray) -> tuple[float, float, float]:
    """(AUROC, AP, F1-max) of positives vs negatives; `negatives_sorted` must be ascending.

    NaN for all three when either side is empty.
    """
    pos = np.sort(np.asarray(positives, dtype=negatives_sorted.dtype))
    below = np.searchsorted(negatives_sorted, pos, side="left")      # negatives < p
    at_or_below = np.searchsorted(negatives_sorted, pos, side="right")  # negatives <= p
    return _from_counts(negatives_sorted.size, pos, below, at_or_below)


def _from_counts(n: int, pos: np.ndarray, below: np.ndarray, at_or_below: np.ndarray) -> tuple[float, float, float]:
    """The three metrics from positives sorted ascending and, for each, the number of
    negatives < and <= it."""
    n, m = int(n), int(pos.size)
    if n == 0 or m == 0:
        return math.nan, math.nan, math.nan
    u = below.sum(dtype=np.float64) + 0.5 * (at_or_below - below).sum(dtype=np.float64)
    auroc = u / (float(n) * float(m))
    # one threshold per distinct positive score t: predict "positive" for scores >= t
    first = np.flatnonzero(np.concatenate(([True], pos[1:] != pos[:-1])))
    tp = (m - first).astype(np.float64)                      # positives >= t
    fp = (n - below[first]).astype(np.float64)               # negatives >= t
    step = np.diff(np.append(first, m)).astype(np.float64)   # positives == t (recall step x m)
    precision = tp / (tp + fp)
    ap = float(np.sum(step * precision) / m)
    f1_max = float(np.max(2 * tp / (tp + fp + m)))  # 2TP / (2TP + FP + FN), FN = m - TP
    return float(auroc), ap, f1_max


def image_metrics(labels: Sequence, scores: Sequence) -> dict:
    """Image AUROC, AP and F1-max; `labels` 0 = normal, 1 = anomalous; higher score = more anomalous.

    Only one class present -> NaN for all three (with a logged warning).
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.ndim != 1 or scores.ndim != 1 or labels.shape != scores.shape:
        raise DataError(f"image metrics need two 1-D arrays of equal length, got labels {labels.shape} "
                        f"and scores {scores.shape}")
    if labels.size and not np.isin(labels, (0, 1)).all():
        bad = np.unique(labels[~np.isin(labels, (0, 1))])[:5]
        raise DataError(f"image labels must be 0 (normal) or 1 (anomalous), found {bad.tolist()}")
    if np.isnan(scores).any():
        raise DataError(f"image scores contain NaN (at indices {np.flatnonzero(np.isnan(scores))[:5].tolist()})")
    labels = labels.astype(bool)
    if labels.all() or not labels.any():
        log.warning("image metrics undefined: only %s images among the %d given",
                    "anomalous" if labels.any() else "normal", labels.size)
    values = ranking_metrics(np.sort(scores[~labels]), scores[labels])
    return dict(zip(IMAGE_KEYS, values))


def pixel_metrics(masks: Sequence, maps: Sequence) -> dict:
    """Pixel AUROC, AP and F1-max over every pixel of the test set, at ground-truth resolution.

    masks / maps: sequences of H x W arrays (sizes may differ between images, not within a pair).
    No anomalous pixel anywhere (or no normal one) -> NaN with a logged warning.
    """
    return pixel_metrics_from(gather_pixels(masks, maps))


def pixel_metrics_from(pixels) -> dict:
    """`pixel_metrics` on an already gathered test set (`gather_pixels` without `max_fpr`)."""
    if not pixels.normal.exact:
        raise ValueError("pixel metrics need the full sort of normal scores (gather_pixels without max_fpr)")
    if pixels.anomalous.size == 0 or pixels.n_normal == 0:
        log.warning("pixel metrics undefined: the masks hold %s",
                    "no anomalous pixel" if pixels.anomalous.size == 0 else "no normal pixel")
    n = pixels.n_normal
    n_gt, n_ge = pixels.normal_counts()  # per anomalous score, descending order
    values = _from_counts(n, pixels.anomalous[::-1], n - n_ge[::-1], n - n_gt[::-1])
    return dict(zip(PIXEL_KEYS, values))
