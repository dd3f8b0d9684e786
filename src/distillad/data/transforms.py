"""Geometry-aware preprocessing: every transform remembers what it did to an image so that an
anomaly map computed at model resolution can be put back onto the original image.

Masks are never resized for evaluation: maps are brought to the mask, not the other way round.

Modes (`Preprocess.mode`):
- "resize": stretch to size x size (the aspect ratio is not kept; the map is stretched back).
- "pad_resize": pad to a square with edge padding, centred, then resize (L2BT, METHODS.md);
  the padding is cut from the map before it is resized back to the original size.
- "resize_crop": resize to `resize` x `resize`, then centre-crop `size` (Dinomaly: 448 -> 392).
  The map covers only the crop; outside it the map is extended from its nearest edge (the model
  never saw those pixels, so they get the closest value it computed).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_INTERP = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC, "nearest": cv2.INTER_NEAREST,
           "area": cv2.INTER_AREA}


@dataclass(frozen=True)
class Geometry:
    """What preprocessing did to one image; `restore` undoes it for a 2-D map."""

    orig_hw: tuple[int, int]
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, bottom, left, right (original pixels)
    resized_hw: tuple[int, int] = (0, 0)          # after resize (before crop)
    crop: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, h, w in resized coordinates

    def restore(self, amap: np.ndarray | torch.Tensor) -> np.ndarray:
        """Map at model-output resolution (any h x w) -> map on the original image (H x W)."""
        if isinstance(amap, torch.Tensor):
            amap = amap.detach().float().cpu().numpy()
        amap = np.asarray(amap, dtype=np.float32)
        if amap.ndim != 2:
            raise ValueError(f"restore expects a 2-D map, got shape {amap.shape}")
        rh, rw = self.resized_hw
        ct, cl, ch, cw = self.crop
        # 1. back to the crop's size in resized coordinates, then un-crop (edge extension)
        m = cv2.resize(amap, (cw, ch), interpolation=cv2.INTER_LINEAR)
        if (ch, cw) != (rh, rw):
            m = cv2.copyMakeBorder(m, ct, rh - ct - ch, cl, rw - cl - cw, cv2.BORDER_REPLICATE)
        # 2. back to the padded original size, then cut the padding. Cells whose centres lie in
        #    the padding are first replaced by the nearest image cell, so bilinear upsampling
        #    cannot blend padding values into the outermost image rows / columns.
        H, W = self.orig_hw
        pt, pb, pl, pr = self.pad
        if any(self.pad):
            m = _edge_fill_outside(m, pt, pt + H, H + pt + pb, axis=0)
            m = _edge_fill_outside(m, pl, pl + W, W + pl + pr, axis=1)
        m = cv2.resize(m, (W + pl + pr, H + pt + pb), interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(m[pt : pt + H, pl : pl + W])


def _edge_fill_outside(m: np.ndarray, lo: int, hi: int, total: int, axis: int) -> np.ndarray:
    """Along `axis`, cells of m (spanning `total` original pixels) whose centres fall outside
    the original-pixel interval [lo, hi) take the value of the nearest cell inside it."""
    n = m.shape[axis]
    scale = n / total
    first = max(0, int(np.ceil(lo * scale - 0.5)))
    last = min(n - 1, int(np.floor(hi * scale - 0.5)))
    if last < first:  # the image is thinner than one cell: keep the single nearest cell
        first = last = min(n - 1, max(0, int((lo + hi) / 2 * scale)))
    if first == 0 and last == n - 1:
        return m
    inner = m[first : last + 1] if axis == 0 else m[:, first : last + 1]
    width = [(first, n - 1 - last), (0, 0)] if axis == 0 else [(0, 0), (first, n - 1 - last)]
    return np.pad(inner, width, mode="edge")


@dataclass(frozen=True)
class Preprocess:
    """Image (H x W x 3 uint8) -> normalised tensor (3 x size x size) + Geometry."""

    size: int
    mode: str = "resize"            # "resize" | "pad_resize" | "resize_crop"
    resize: int | None = None       # for "resize_crop": the size before the centre crop
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self):
        if self.mode not in ("resize", "pad_resize", "resize_crop"):
            raise ValueError(f"unknown preprocessing mode {self.mode!r}")
        if self.mode == "resize_crop" and (self.resize is None or self.resize < self.size):
            raise ValueError("resize_crop needs resize >= size")
        if self.interpolation not in _INTERP:
            raise ValueError(f"unknown interpolation {self.interpolation!r}")

    def geometry(self, hw: tuple[int, int]) -> Geometry:
        H, W = hw
        pad = (0, 0, 0, 0)
        if self.mode == "pad_resize" and H != W:
            s = max(H, W)
            pt, pl = (s - H) // 2, (s - W) // 2
            pad = (pt, s - H - pt, pl, s - W - pl)
        if self.mode == "resize_crop":
            r = int(self.resize)
            off = (r - self.size) // 2
            return Geometry((H, W), pad, (r, r), (off, off, self.size, self.size))
        return Geometry((H, W), pad, (self.size, self.size), (0, 0, self.size, self.size))

    def apply_array(self, image: np.ndarray) -> tuple[np.ndarray, Geometry]:
        """Geometric part only: uint8 H x W x 3 -> uint8 size x size x 3."""
        g = self.geometry(image.shape[:2])
        pt, pb, pl, pr = g.pad
        if any(g.pad):
            image = cv2.copyMakeBorder(image, pt, pb, pl, pr, cv2.BORDER_REPLICATE)
        rh, rw = g.resized_hw
        if image.shape[:2] != (rh, rw):
            interp = _INTERP[self.interpolation]
            if interp == cv2.INTER_CUBIC or interp == cv2.INTER_LINEAR:
                # antialias when shrinking a lot, as PIL / torchvision do
                if image.shape[0] > 2 * rh or image.shape[1] > 2 * rw:
                    interp = cv2.INTER_AREA
            image = cv2.resize(image, (rw, rh), interpolation=interp)
        ct, cl, ch, cw = g.crop
        image = image[ct : ct + ch, cl : cl + cw]
        return np.ascontiguousarray(image), g

    def normalise(self, image: np.ndarray) -> torch.Tensor:
        image = image if image.flags.writeable else image.copy()  # torch refuses read-only arrays
        t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (t - mean) / std

    def __call__(self, image: np.ndarray) -> tuple[torch.Tensor, Geometry]:
        arr, g = self.apply_array(image)
        return self.normalise(arr), g

    def batch(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, list[Geometry]]:
        out = [self(im) for im in images]
        return torch.stack([t for t, _ in out]), [g for _, g in out]

    def to_config(self) -> dict:
        return {"size": self.size, "mode": self.mode, "resize": self.resize,
                "interpolation": self.interpolation, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_config(cls, cfg: dict) -> "Preprocess":
        cfg = dict(cfg)
        cfg["mean"] = tuple(cfg.get("mean", IMAGENET_MEAN))
        cfg["std"] = tuple(cfg.get("std", IMAGENET_STD))
        return cls(**cfg)
