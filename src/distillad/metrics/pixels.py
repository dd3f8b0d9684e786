"""Gather the pixels of a test set once, in the form every pixel metric needs.

Every pixel-level metric here (pixel AUROC / AP / F1-max, the PRO curve, AUPRO at any limit,
the defect-size quartiles) only asks, for each anomalous pixel score ``a``: how many normal
pixels score ``>= a`` and ``> a``? So the test set is reduced to

- the scores of all normal pixels (mask == 0, of every image, normal or anomalous), sorted
  ascending (`NormalScores`); counting is then a binary search per anomalous pixel;
- the scores of the anomalous pixels, sorted descending, each with the id of its ground-truth
  connected component (8-connectivity, at ground-truth resolution) and the component areas.

Normal pixels are usually > 95 % of a test set, and only their *count* above a threshold is
needed, so they are never argsorted: one in-place `np.sort` (or, when only FPRs up to a limit
matter, `np.partition` + a sort of the top part). All scores are compared as float32; two
float64 scores that round to the same float32 count as a tie.

Conventions (documented choices):
- a mask may be bool or numeric (nonzero = anomalous) or None (= all normal, shape of its map);
- a map must have exactly its mask's shape: the metrics are at ground-truth resolution and are
  never resized here (a mismatch is a `DataError` naming the index);
- an anomalous image with an empty mask (MTSD MT_Uneven has some) adds no region, and its
  pixels are normal pixels for the FPR, like those of normal images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from ..errors import DataError

#: 8-connectivity, as in the MVTec AD / L2BT reference evaluation code
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def check_pairs(masks: Sequence, maps: Sequence) -> list[tuple[np.ndarray, np.ndarray]]:
    """Validate masks and maps and return (bool mask, float32 map) pairs.

    Raises `DataError` naming the index of the first bad pair.
    """
    if masks is None or maps is None:
        raise DataError("pixel metrics need both masks and maps (got None)")
    masks, maps = list(masks), list(maps)
    if len(masks) != len(maps):
        raise DataError(f"got {len(masks)} masks but {len(maps)} anomaly maps; one map per mask is needed")
    pairs = []
    for i, (mask, amap) in enumerate(zip(masks, maps)):
        amap = np.asarray(amap)
        if amap.ndim != 2:
            raise DataError(f"anomaly map {i}: expected a 2-D H x W array, got shape {amap.shape}")
        if not (np.issubdtype(amap.dtype, np.floating) or np.issubdtype(amap.dtype, np.integer)):
            raise DataError(f"anomaly map {i}: expected real scores, got dtype {amap.dtype}")
        amap = amap.astype(np.float32, copy=False)
        if np.isnan(amap).any():
            raise DataError(f"anomaly map {i} contains NaN scores")
        if mask is None:
            mask = np.zeros(amap.shape, dtype=bool)
        else:
            mask = np.asarray(mask)
            if mask.dtype != bool:
                mask = mask != 0
        if mask.shape != amap.shape:
            raise DataError(
                f"anomaly map {i} has shape {amap.shape} but its ground-truth mask has shape {mask.shape}; "
                f"maps must be given at ground-truth resolution (distillad.metrics never resizes)")
        pairs.append((mask, amap))
    return pairs


class NormalScores:
    """Scores of the normal pixels, sorted, answering "how many are >= / > t".

    With ``max_fpr`` set (< 1), only the top ``ceil(max_fpr * n) + 1`` scores are sorted (after
    an O(n) `np.partition`): counts are then exact for every threshold at or above the pivot
    (the smallest kept score) and, below it, replaced by `n` (FPR 1). Every threshold below the
    pivot has an FPR above `max_fpr`, so curves are exact wherever FPR <= max_fpr, which is all
    an AUPRO with integration limit <= max_fpr reads.
    """

    def __init__(self, values: np.ndarray, max_fpr: float | None = None):
        """`values` (1-D float32) is taken over and reordered in place."""
        self.n = int(values.size)
        keep = self.n if max_fpr is None or max_fpr >= 1 else min(self.n, math.ceil(max_fpr * self.n) + 1)
        if keep >= self.n:
            values.sort()
            self.sorted = values
            self.pivot = -np.inf
            self.n_ge_pivot = self.n
            self.exact = True
        else:
            values.partition(self.n - keep)
            self.pivot = values[self.n - keep]
            # ties with the pivot may also sit left of the partition point: count them all
            self.n_ge_pivot = int(np.count_nonzero(values >= self.pivot))
            self.sorted = np.sort(values[self.n - keep:])
            self.exact = False

    def count_ge(self, t: np.ndarray) -> np.ndarray:
        """Number of normal scores >= each t (int64); `n` below the pivot (see class doc)."""
        t = np.asarray(t, dtype=np.float32)
        c = self.sorted.size - np.searchsorted(self.sorted, t, side="left").astype(np.int64)
        if not self.exact:
            c[t == self.pivot] = self.n_ge_pivot
            c[t < self.pivot] = self.n
        return c

    def count_gt(self, t: np.ndarray) -> np.ndarray:
        """Number of normal scores > each t (int64); `n` below the pivot (see class doc)."""
        t = np.asarray(t, dtype=np.float32)
        c = self.sorted.size - np.searchsorted(self.sorted, t, side="right").astype(np.int64)
        if not self.exact:
            c[t < self.pivot] = self.n
        return c


@dataclass
class PixelScores:
    """A test set reduced for pixel metrics (see the module docstring).

    normal: the normal pixels' scores (`NormalScores`).
    anomalous: anomalous pixel scores, float32, sorted descending.
    region: for each entry of `anomalous`, its ground-truth component id (index into `area`).
    area: pixel area of every ground-truth connected component of the test set.
    """

    normal: NormalScores
    anomalous: np.ndarray
    region: np.ndarray
    area: np.ndarray
    _counts: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def n_normal(self) -> int:
        return self.normal.n

    def normal_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(#normal > a, #normal >= a) for every anomalous score a, in `anomalous` order."""
        if self._counts is None:
            asc = self.anomalous[::-1]  # searchsorted is fastest with ascending queries
            self._counts = (self.normal.count_gt(asc)[::-1], self.normal.count_ge(asc)[::-1])
        return self._counts


def gather_pixels(masks: Sequence, maps: Sequence, max_fpr: float | None = None) -> PixelScores:
    """Validate and reduce a test set (lists of H x W masks and maps, sizes may differ per image)."""
    pairs = check_pairs(masks, maps)
    n_normal = sum(int(m.size - np.count_nonzero(m)) for m, _ in pairs)
    normal = np.empty(n_normal, dtype=np.float32)
    anomalous, region, areas = [], [], []
    offset = n_regions = 0
    for mask, amap in pairs:
        if mask.any():
            labels, n = ndimage.label(mask, structure=EIGHT_CONNECTED)
            inside = labels[mask]
            anomalous.append(amap[mask])
            region.append(inside.astype(np.int64) - 1 + n_regions)
            areas.append(np.bincount(inside, minlength=n + 1)[1:])
            n_regions += n
            values = amap[~mask]
        else:
            values = amap.ravel()
        normal[offset:offset + values.size] = values
        offset += values.size
    if anomalous:
        anomalous = np.concatenate(anomalous)
        region = np.concatenate(region)
        order = np.argsort(anomalous, kind="stable")[::-1]
        anomalous, region = anomalous[order], region[order]
        area = np.concatenate(areas).astype(np.int64)
    else:
        anomalous = np.empty(0, np.float32)
        region = np.empty(0, np.int64)
        area = np.empty(0, np.int64)
    return PixelScores(NormalScores(normal, max_fpr), anomalous, region, area)
