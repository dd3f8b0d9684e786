"""Report figures (ROC, PRO, score histogram) rendered to PNG bytes with matplotlib's Agg canvas.

Figures are built as `matplotlib.figure.Figure` objects attached to an Agg canvas directly, not
through pyplot: no global figure state, no GUI backend, safe in threads and headless runs.
Curve *values* are computed elsewhere (evaluate / metrics); these functions only draw them.
"""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np


def _figure(w: float = 4.8, h: float = 3.8):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _fmt(v) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.4f}"


def roc_png(curves: Sequence[tuple[str, np.ndarray, np.ndarray, float | None]], title: str) -> bytes:
    """curves: (label, fpr, tpr, auroc) tuples drawn on one ROC plot with the chance diagonal."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    for label, fpr, tpr, auc in curves:
        ax.plot(fpr, tpr, lw=1.5, label=f"{label} (AUROC {_fmt(auc)})")
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    if curves:
        ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def pro_png(fpr: np.ndarray, pro: np.ndarray, *, limit: float = 0.3,
            aupro: float | None = None) -> bytes:
    """Per-region overlap against the pixel false positive rate; the integration limit of
    AUPRO (default 0.3) is marked by a vertical line and the integrated area is shaded."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    fpr = np.asarray(fpr, dtype=float)
    pro = np.asarray(pro, dtype=float)
    ax.plot(fpr, pro, lw=1.5, label=f"PRO (AUPRO@{limit:g} {_fmt(aupro)})")
    inside = fpr <= limit
    if inside.any() and fpr.size > 1:
        # shade the integrated area up to the limit, closing it with the interpolated value there
        order = np.argsort(fpr, kind="stable")
        at_limit = float(np.interp(limit, fpr[order], pro[order]))
        ax.fill_between(np.r_[fpr[inside], limit], np.r_[pro[inside], at_limit], alpha=0.15)
    ax.axvline(limit, ls="--", c="red", lw=1, label=f"integration limit FPR = {limit:g}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("pixel false positive rate")
    ax.set_ylabel("per-region overlap")
    ax.set_title("PRO curve")
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def histogram_png(normal: np.ndarray, anomalous: np.ndarray, *, threshold: float | None = None,
                  bins: int = 30) -> bytes:
    """Image-score histograms of normal and anomalous test images on shared bins; the
    detector's threshold (99th percentile of normal training scores) as a vertical line."""
    fig = _figure(5.6, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    normal = np.asarray(normal, dtype=float)
    anomalous = np.asarray(anomalous, dtype=float)
    both = np.concatenate([normal, anomalous])
    lo, hi = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
    if threshold is not None and np.isfinite(threshold):
        lo, hi = min(lo, threshold), max(hi, threshold)
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    if normal.size:
        ax.hist(normal, bins=edges, alpha=0.6, color="tab:blue", label=f"normal (n={normal.size})")
    if anomalous.size:
        ax.hist(anomalous, bins=edges, alpha=0.6, color="tab:red", label=f"anomalous (n={anomalous.size})")
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, ls="--", c="k", lw=1, label=f"threshold_ {threshold:.4g}")
    from matplotlib.ticker import MaxNLocator
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("image anomaly score")
    ax.set_ylabel("images")
    ax.set_title("Image scores")
    ax.legend(fontsize=8)
    return _png(fig)
