"""Heatmap overlays: an anomaly map blended over its image, with the ground-truth contour.

Display range. `overlay(..., vmin, vmax)` maps `vmin` to the bottom of the colour scale and
`vmax` to the top. Pass one fixed range for every image you want to compare: normalising each
map to its own min-max (what happens when vmin/vmax are left None) stretches the noise of a
normal image over the whole scale, so every normal image looks anomalous. `evaluate` therefore
uses one range for the whole report (see `display_range`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from ..data.samples import as_rgb_array
from ..errors import DataError

#: colour of the ground-truth contour (RGB): white reads on both ends of jet and inferno
CONTOUR_RGB = (255, 255, 255)


def _colormap(name: str):
    import matplotlib
    return matplotlib.colormaps[name]


def display_range(normal_maps: Iterable[np.ndarray], all_maps: Iterable[np.ndarray],
                  *, max_values: int = 2_000_000) -> tuple[float, float]:
    """One display range for a set of maps: from the median pixel of the normal images' maps
    (so a typical normal pixel sits at the bottom of the scale and colour shows only what
    exceeds normal) to the largest value of any map. Without normal maps the lower end is the
    smallest value of any map. Pixels are subsampled (evenly) to at most `max_values` for the
    median, which is then exact on that subsample."""
    all_maps = list(all_maps)
    if not all_maps:
        return 0.0, 1.0
    vmax = max(float(np.max(m)) for m in all_maps)
    normal_maps = list(normal_maps)
    if normal_maps:
        total = sum(m.size for m in normal_maps)
        step = max(1, int(np.ceil(total / max_values)))
        vals = np.concatenate([np.ravel(m)[::step] for m in normal_maps])
        vmin = float(np.median(vals))
    else:
        vmin = min(float(np.min(m)) for m in all_maps)
    if not vmax > vmin:  # constant maps: any non-empty range shows them as the bottom colour
        vmax = vmin + 1.0
    return vmin, vmax


def mask_contour(mask: np.ndarray, thickness: int | None = None) -> np.ndarray:
    """Boolean image of the boundary pixels of `mask` (inside edge), `thickness` pixels wide
    (default: about 1/200 of the shorter side, at least 1)."""
    from scipy.ndimage import binary_erosion
    mask = np.asarray(mask, dtype=bool)
    if thickness is None:
        thickness = max(1, round(min(mask.shape) / 200))
    # border_value=0: regions touching the image edge get a contour along the edge too
    inner = binary_erosion(mask, iterations=thickness, border_value=0)
    return mask & ~inner


def overlay(image: np.ndarray, amap: np.ndarray, mask: np.ndarray | None = None,
            vmin: float | None = None, vmax: float | None = None, *,
            cmap: str = "jet", alpha: float = 0.5) -> np.ndarray:
    """Blend the colour-mapped anomaly map over the image; draw the mask's contour.

    image: H x W x 3 uint8 (H x W grayscale accepted); amap: H x W (same size, it is never
    resized here: bring maps to the image first); mask: optional H x W bool ground truth.
    vmin / vmax: display range (values outside are clipped); None = this map's own min / max,
    fine for one image alone but misleading across images (see the module docstring).
    Returns H x W x 3 uint8.
    """
    img = as_rgb_array(image, "overlay image")
    amap = np.asarray(amap, dtype=np.float64)
    if amap.ndim != 2 or amap.shape != img.shape[:2]:
        raise DataError(f"overlay: map of shape {amap.shape} does not match image of shape {img.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay: alpha must lie in [0, 1], got {alpha}")
    finite = np.isfinite(amap)
    lo = float(np.min(amap[finite])) if vmin is None and finite.any() else (0.0 if vmin is None else float(vmin))
    hi = float(np.max(amap[finite])) if vmax is None and finite.any() else (1.0 if vmax is None else float(vmax))
    span = hi - lo if hi > lo else 1.0
    norm = np.clip((np.where(finite, amap, lo) - lo) / span, 0.0, 1.0)
    heat = _colormap(cmap)(norm)[..., :3] * 255.0
    out = (1.0 - alpha) * img.astype(np.float64) + alpha * heat
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != img.shape[:2]:
            raise DataError(f"overlay: mask of shape {mask.shape} does not match image of shape {img.shape[:2]}")
        out[mask_contour(mask)] = CONTOUR_RGB
    return out


def save_overlay(path: str | os.PathLike, image: np.ndarray, amap: np.ndarray,
                 mask: np.ndarray | None = None, vmin: float | None = None,
                 vmax: float | None = None, **kw) -> Path:
    """`overlay` written as an image file (format from the suffix, e.g. .png), atomically."""
    from ..io import atomic_write_bytes
    import io as _io
    path = Path(path)
    arr = overlay(image, amap, mask, vmin, vmax, **kw)
    buf = _io.BytesIO()
    fmt = (path.suffix.lstrip(".") or "png").upper()
    fmt = {"JPG": "JPEG", "TIF": "TIFF"}.get(fmt, fmt)
    try:
        Image.fromarray(arr).save(buf, format=fmt)
    except (KeyError, ValueError) as e:
        raise ValueError(f"{path}: cannot write an image with suffix {path.suffix!r} ({e})") from None
    atomic_write_bytes(path, buf.getvalue())
    return path
