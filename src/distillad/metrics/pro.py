"""Per-region overlap (PRO) curve, AUPRO, defect-size quartile AUPRO and robustness rho.

Reference form (METHODS.md; MVTec AD evaluation code, which L2BT's code adapts):
- the ground-truth regions are the connected components (8-connectivity) of every mask, at
  ground-truth resolution; at threshold t, the overlap of a region is the fraction of its
  pixels scoring >= t, and PRO(t) the mean overlap over all regions of the test set (each
  region counts once, whatever its size);
- FPR(t) is the fraction of *all* normal pixels of the test set scoring >= t: normal images
  included, and the normal pixels of anomalous images too;
- AUPRO@L integrates PRO over FPR from 0 to L with the trapezoidal rule (linear interpolation
  at L) and divides by L, so a perfect map scores 1.0 and a constant map L / 2.

Exact curve: the curve here has a vertex at *every* distinct score (thresholds where scores
tie, normal and anomalous, are joined by a straight segment, as sklearn does for ROC). The
reference code samples the curve at 99 (L2BT) or all (MVTec) normal-score quantiles, which
differs from the exact value by at most the area of that sampling; nothing else differs.
Everything comes from one sort: the normal scores are sorted once (or, when only FPR <= L_max
matters, partitioned and only their top L_max sorted) and the anomalous pixels argsorted once;
every limit and every quartile subset reuses that order.

Defect-size quartiles (L2BT, section IV-A 2, and its reference code): q1, q2, q3 are the 25/50/75 %
quantiles (numpy's linear interpolation) of the areas of all ground-truth components of the test
set; "Qk" keeps only the components of area <= q_k (Q4 keeps all) and the PRO averages over the
kept components only. The pixels of dropped components are neither regions nor normal pixels:
the FPR always uses all normal pixels. Robustness rho is formula (4) of L2BT (see `robustness`).
"""
from __future__ import annotations

import logging
import math
from typing import Sequence

import numpy as np

from .pixels import PixelScores, gather_pixels

log = logging.getLogger(__name__)

DEFAULT_LIMITS = (0.3, 0.1, 0.05, 0.01)
QUARTILE_LIMITS = (0.3, 0.05)


def limit_key(limit: float) -> str:
    """Key suffix of an integration limit in percent: 0.3 -> "30", 0.05 -> "5", 0.005 -> "0p5"."""
    pct = round(float(limit) * 100, 6)
    return str(int(pct)) if pct == int(pct) else repr(pct).replace(".", "p")


def _check_limits(limits: Sequence[float]) -> tuple[float, ...]:
    limits = tuple(float(x) for x in limits)
    if not limits or any(not (0 < x <= 1) for x in limits):
        raise ValueError(f"AUPRO integration limits must lie in (0, 1], got {limits}")
    return limits


def _vertices(pixels: PixelScores, keep_region: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, pro) vertices of the exact PRO curve, from (0, 0) to (1, 1), fpr non-decreasing.

    keep_region: bool per region; only those regions count (defect-size subsets).
    Returns two empty arrays when there is no region or no normal pixel.
    """
    values, region = pixels.anomalous, pixels.region
    n_gt, n_ge = pixels.normal_counts()
    if keep_region is not None:
        sel = keep_region[region]
        values, region, n_gt, n_ge = values[sel], region[sel], n_gt[sel], n_ge[sel]
    n_regions = int(np.count_nonzero(keep_region)) if keep_region is not None else pixels.area.size
    if values.size == 0 or n_regions == 0 or pixels.n_normal == 0:
        return np.empty(0), np.empty(0)
    # every region adds 1 / n_regions to PRO when all its pixels are above the threshold
    weight = 1.0 / (pixels.area[region].astype(np.float64) * n_regions)
    cum = np.cumsum(weight)
    # tie groups (values descending): the curve goes straight from the point just above the
    # group's score, (#normal > t, PRO before), to the point at it, (#normal >= t, PRO after)
    start = np.flatnonzero(np.concatenate(([True], values[1:] != values[:-1])))
    end = np.append(start[1:], values.size) - 1
    n = float(pixels.n_normal)
    fpr = np.empty(2 * start.size + 2)
    pro = np.empty(2 * start.size + 2)
    fpr[0] = pro[0] = 0.0
    fpr[1:-1:2] = n_gt[start] / n
    fpr[2:-1:2] = n_ge[start] / n
    pro[1:-1:2] = np.concatenate(([0.0], cum))[start]  # PRO of the thresholds above the group
    pro[2:-1:2] = cum[end]
    fpr[-1] = pro[-1] = 1.0
    pro[-2] = 1.0  # all regions fully covered below the lowest anomalous score (cumsum rounding)
    return fpr, pro


def _area(fpr: np.ndarray, pro: np.ndarray, limit: float) -> float:
    """Trapezoidal area under (fpr, pro) from 0 to `limit`, linear interpolation at the limit."""
    x0, x1, y0, y1 = fpr[:-1], fpr[1:], pro[:-1], pro[1:]
    width = np.minimum(x1, limit) - x0
    inside = width > 0
    x0, x1, y0, y1, width = x0[inside], x1[inside], y0[inside], y1[inside], width[inside]
    y_end = y0 + (y1 - y0) * (width / (x1 - x0))  # = y1 unless the segment crosses the limit
    return float(np.sum(width * (y0 + y_end)) / 2)


def _aupros(fpr: np.ndarray, pro: np.ndarray, limits: Sequence[float]) -> list[float]:
    if fpr.size == 0:
        return [math.nan] * len(limits)
    return [_area(fpr, pro, lim) / lim for lim in limits]


def _simplify(fpr: np.ndarray, pro: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop repeated vertices (same point twice in a row): same curve, fewer points."""
    if fpr.size == 0:
        return fpr, pro
    keep = np.concatenate(([True], (fpr[1:] != fpr[:-1]) | (pro[1:] != pro[:-1])))
    return fpr[keep], pro[keep]


def pro_curve(masks: Sequence, maps: Sequence, max_fpr: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The exact PRO curve (fpr, pro) for plotting: vertices from (0, 0) to (1, 1).

    fpr is non-decreasing; two consecutive vertices with the same fpr are a vertical step.
    Up to two vertices per distinct anomalous score (repeats removed): decimate for plotting if
    the test set is large. Empty arrays (with a logged warning) when there is no region.
    max_fpr: return the curve only up to this FPR (last vertex interpolated at it), which is
    much cheaper on large test sets (only the normal scores above ~max_fpr are sorted).
    """
    if max_fpr is not None and not (0 < max_fpr <= 1):
        raise ValueError(f"max_fpr must lie in (0, 1], got {max_fpr}")
    pixels = gather_pixels(masks, maps, max_fpr=max_fpr)
    fpr, pro = _vertices(pixels)
    if fpr.size == 0:
        log.warning("PRO curve undefined: %s", _why_undefined(pixels))
    elif max_fpr is not None and max_fpr < 1:
        fpr, pro = _truncate(fpr, pro, max_fpr)
    return _simplify(fpr, pro)


def _truncate(fpr: np.ndarray, pro: np.ndarray, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """The curve up to fpr == limit, ending with the point interpolated at the limit."""
    i = int(np.searchsorted(fpr, limit, side="right"))  # fpr[:i] <= limit < fpr[i]
    if i >= fpr.size:
        return fpr, pro
    y = pro[i - 1] + (pro[i] - pro[i - 1]) * (limit - fpr[i - 1]) / (fpr[i] - fpr[i - 1])
    return np.append(fpr[:i], limit), np.append(pro[:i], y)


def aupro(masks: Sequence, maps: Sequence, limits: Sequence[float] = DEFAULT_LIMITS) -> dict:
    """AUPRO at each integration limit: {"aupro_30": ..., "aupro_10": ..., ...} (see `limit_key`).

    NaN (with a logged warning) when the masks hold no anomalous pixel or no normal pixel.
    """
    limits = _check_limits(limits)
    return aupro_from(gather_pixels(masks, maps, max_fpr=max(limits)), limits)


def aupro_from(pixels: PixelScores, limits: Sequence[float] = DEFAULT_LIMITS) -> dict:
    """`aupro` on an already gathered test set (its `max_fpr`, if any, must cover the limits)."""
    limits = _check_limits(limits)
    fpr, pro = _vertices(pixels)
    if fpr.size == 0:
        log.warning("AUPRO undefined: %s", _why_undefined(pixels))
    return {f"aupro_{limit_key(lim)}": v for lim, v in zip(limits, _aupros(fpr, pro, limits))}


def defect_size_quartiles(areas: np.ndarray) -> tuple[float, float, float]:
    """(q1, q2, q3): 25/50/75 % quantiles of the component areas (numpy's linear interpolation,
    as L2BT's reference code)."""
    q = np.quantile(np.asarray(areas, dtype=np.float64), (0.25, 0.5, 0.75))
    return float(q[0]), float(q[1]), float(q[2])


def robustness(aupro_q1: float, aupro_q2: float, aupro_q3: float, aupro_q4: float) -> float:
    """Robustness to defect size, L2BT formula (4): rho = w (1 - s), with
    w = mean(AUPRO(Q1..Q4)) and s = |AUPRO(Q4) - AUPRO(Q1)| / max(AUPRO(Q1), AUPRO(Q4)).

    The paper leaves 0/0 open (AUPRO(Q1) = AUPRO(Q4) = 0): then s = 0 (no difference between
    the smallest and all defects), so rho = w. NaN in -> NaN out.
    """
    q = (aupro_q1, aupro_q2, aupro_q3, aupro_q4)
    if any(math.isnan(v) for v in q):
        return math.nan
    w = sum(q) / 4
    top = max(aupro_q1, aupro_q4)
    s = abs(aupro_q4 - aupro_q1) / top if top > 0 else 0.0
    return w * (1 - s)


def aupro_quartiles(masks: Sequence, maps: Sequence, limits: Sequence[float] = QUARTILE_LIMITS) -> dict:
    """Defect-size quartile AUPRO and robustness (L2BT section IV-A): for each limit L,
    ``aupro_{L}_q1..q4`` and ``rho_{L}`` (keys as `limit_key`: ``aupro_30_q1``, ``rho_5``...).

    ``aupro_{L}_q4`` equals ``aupro_{L}``. NaN when there is no region or no normal pixel.
    """
    limits = _check_limits(limits)
    return aupro_quartiles_from(gather_pixels(masks, maps, max_fpr=max(limits)), limits)


def aupro_quartiles_from(pixels: PixelScores, limits: Sequence[float] = QUARTILE_LIMITS) -> dict:
    """`aupro_quartiles` on an already gathered test set."""
    limits = _check_limits(limits)
    curves = []
    if pixels.area.size and pixels.n_normal:
        for q in (*defect_size_quartiles(pixels.area), math.inf):
            curves.append(_vertices(pixels, pixels.area <= q))
    else:
        log.warning("defect-size AUPRO undefined: %s", _why_undefined(pixels))
        curves = [(np.empty(0), np.empty(0))] * 4
    per_q = [_aupros(fpr, pro, limits) for fpr, pro in curves]  # [quartile][limit]
    out = {}
    for j, lim in enumerate(limits):
        key = limit_key(lim)
        for k in range(4):
            out[f"aupro_{key}_q{k + 1}"] = per_q[k][j]
        out[f"rho_{key}"] = robustness(*(per_q[k][j] for k in range(4)))
    return out


def _why_undefined(pixels: PixelScores) -> str:
    if pixels.area.size == 0:
        return "the masks hold no anomalous pixel"
    return "the masks hold no normal pixel"
