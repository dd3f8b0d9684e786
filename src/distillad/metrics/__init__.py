"""Metrics at ground-truth resolution over a whole test set (`compute_metrics` for all at once).

- `image_metrics(labels, scores)`: image AUROC, AP, F1-max.
- `pixel_metrics(masks, maps)`: pixel AUROC, AP, F1-max (exact, one sort of the scores).
- `aupro(masks, maps, limits)`, `pro_curve(masks, maps)`: per-region overlap, FPR over all
  normal pixels of the test set (normal images included).
- `aupro_quartiles(masks, maps, limits)`, `robustness(...)`, `defect_size_quartiles(areas)`:
  L2BT's defect-size quartile AUPRO and robustness rho (formula (4)).
- `classification_metrics(y_true, y_pred, class_names)`: top-1 and per-class accuracy.

Higher score = more anomalous everywhere. Maps are never resized here: a map whose shape
differs from its mask is a `distillad.errors.DataError` naming its index.
"""
from .classification import classification_metrics
from .compute import compute_metrics
from .pro import (DEFAULT_LIMITS, QUARTILE_LIMITS, aupro, aupro_quartiles, defect_size_quartiles, limit_key,
                  pro_curve, robustness)
from .ranking import image_metrics, pixel_metrics, ranking_metrics

__all__ = ["compute_metrics", "image_metrics", "pixel_metrics", "aupro", "pro_curve", "aupro_quartiles",
           "robustness", "defect_size_quartiles", "limit_key", "classification_metrics", "ranking_metrics",
           "DEFAULT_LIMITS", "QUARTILE_LIMITS"]
