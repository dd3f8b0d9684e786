"""`compute_metrics`: every anomaly-detection metric of one test set as one flat dict."""
from __future__ import annotations

from typing import Sequence

from ..errors import DataError
from .pixels import gather_pixels
from .pro import DEFAULT_LIMITS, QUARTILE_LIMITS, _check_limits, aupro_from, aupro_quartiles_from
from .ranking import image_metrics, pixel_metrics_from


def compute_metrics(labels: Sequence, scores: Sequence, masks: Sequence | None = None,
                    maps: Sequence | None = None, *, limits: Sequence[float] = DEFAULT_LIMITS,
                    quartiles: bool = True, quartile_limits: Sequence[float] = QUARTILE_LIMITS) -> dict:
    """Image metrics, and with `masks` and `maps` the pixel metrics, over the whole test set.

    labels: 0 normal / 1 anomalous per image; scores: image anomaly scores (higher = anomalous).
    masks, maps: per image H x W ground truth (bool / nonzero = anomalous / None = all normal)
        and anomaly map at ground-truth resolution (see `distillad.metrics.pixels`).
    limits: AUPRO integration limits (keys ``aupro_30`` for 0.3 ...).
    quartiles: add the defect-size quartile AUPRO and rho at `quartile_limits`.

    Keys: image_auroc, image_ap, image_f1_max; with masks and maps also pixel_auroc, pixel_ap,
    pixel_f1_max, aupro_<L> per limit and (quartiles) aupro_<L>_q1..q4, rho_<L>. A key is absent
    when its inputs are (no masks -> no pixel keys) and NaN when the inputs cannot define it
    (one image class -> image metrics; no anomalous pixel -> pixel metrics), with a logged warning.
    All pixel metrics come from one gathering and one sort of the pixel scores.

    Pixel metrics pool every pixel of every image given (normal images included). The image
    labels do not enter them: an image labelled anomalous whose mask is empty (MTSD MT_Uneven
    has some) adds no PRO region and its pixels are normal pixels (false positives when they
    score high). To leave such images out instead, do not pass them (evaluate's choice to make).
    """
    out = image_metrics(labels, scores)
    if masks is None and maps is None:
        return out
    if masks is None or maps is None:
        raise ValueError("pixel metrics need both masks and maps; give both or neither")
    masks, maps = list(masks), list(maps)
    if len(masks) != len(labels):
        raise DataError(f"got {len(labels)} image labels but {len(masks)} masks")
    limits = _check_limits(limits)
    quartile_limits = _check_limits(quartile_limits) if quartiles else ()
    pixels = gather_pixels(masks, maps)  # full sort: pixel AUROC needs every rank
    out.update(pixel_metrics_from(pixels))
    out.update(aupro_from(pixels, limits))
    if quartiles:
        out.update(aupro_quartiles_from(pixels, quartile_limits))
    return out
