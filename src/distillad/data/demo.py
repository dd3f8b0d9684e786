"""The embedded demo dataset: real textures shipped inside scikit-image, cut into images, with
procedural defects and exact masks, fully deterministic from a seed. Nothing is downloaded.

Textures: `brick`, `grass` and `gravel` (512 x 512 grayscale photographs in scikit-image's own
data folder; they load without network. `rough_wall` and other textures of the docs are not
part of the installed package and are not used).

Each image is a window of about 1.5 x `size` pixels (scale jittered by +-10 %) at a random place
in the texture, resized to `size` x `size` (area interpolation) and flipped vertically at random
(never horizontally: the brick photograph has a perspective that a left-right flip would turn
into an anomaly). Grayscale is replicated to RGB.

Defects (painted on a normal test image; the mask is exactly the set of pixels the defect wrote,
a single connected region; a painted pixel may keep its value by coincidence, which happens for
a few per cent of the pixels of a stain or a missing patch at most):
- scratch: a thin (2-3 px) curved stroke (a quadratic Bezier) 30-60 % of the image long, light
  on dark surfaces and dark on light ones;
- hole: an irregular dark blob (radius 5-9 % of the image) with the texture faintly visible;
- stain: an irregular blob (radius 8-14 %) blended with a rust, oil or moss tone (alpha 0.3-0.5);
- missing: an irregular quadrilateral (15-25 % of the image side) where the texture is replaced
  by a smooth flat surface at the texture's mean grey with a gentle gradient and faint noise.

Defaults: `size=160`, 24 training and 24 test images per category (one third of the test images
normal, the rest the four defect types in turn), i.e. 72 + 72 images for the three textures:
small enough for a CPU demo (teachers resize to their own input size anyway, so `size` mostly
sets how much texture an image shows), large enough for per-category metrics. `Split.class_names = DEMO_CLASSES` and `class_id` is the
defect type's index, so the set also serves classifiers (OneN).

Generation is seeded per category (`[seed, crc32(category)]`): a category's images do not depend
on which other categories are asked for.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ..errors import DataError
from .samples import Sample, Split

DEMO_TEXTURES = {"brick": "brick.png", "grass": "grass.png", "gravel": "gravel.png"}
DEMO_CLASSES = ("good", "scratch", "hole", "stain", "missing")
DEFECT_TYPES = DEMO_CLASSES[1:]
_STAIN_TONES = {"rust": (150, 75, 30), "oil": (35, 30, 25), "moss": (70, 110, 40)}


def load_texture(name: str) -> np.ndarray:
    """One of `DEMO_TEXTURES` as an H x W uint8 grayscale array, from scikit-image's data folder."""
    if name not in DEMO_TEXTURES:
        raise DataError(f"unknown demo texture {name!r} (available: {', '.join(DEMO_TEXTURES)})")
    import skimage.data

    path = Path(skimage.data.data_dir) / DEMO_TEXTURES[name]
    if not path.is_file():
        raise DataError(f"{path}: scikit-image's {name!r} texture is not installed")
    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


def demo_dataset(seed: int = 0, categories=("brick", "grass", "gravel"), n_train: int = 24, n_test: int = 24,
                 size: int = 160) -> Split:
    """Multi-category demo split (see the module docstring). Returns in-memory samples."""
    if isinstance(categories, str):
        categories = (categories,)
    if n_train < 1 or n_test < 2 or size < 32:
        raise ValueError("demo_dataset needs n_train >= 1, n_test >= 2 and size >= 32")
    train, test = [], []
    for cat in categories:
        tex = load_texture(cat)
        rng = np.random.default_rng([int(seed), zlib.crc32(cat.encode())])
        for i in range(n_train):
            img = _crop(tex, rng, size)
            train.append(Sample(img, 0, None, "good", cat, 0, meta={"name": f"demo/{cat}/train/{i:03d}"}))
        n_good = max(1, n_test // 3)
        for i in range(n_test):
            img = _crop(tex, rng, size)
            if i < n_good:
                test.append(Sample(img, 0, None, "good", cat, 0, meta={"name": f"demo/{cat}/test/{i:03d}_good"}))
                continue
            kind = DEFECT_TYPES[(i - n_good) % len(DEFECT_TYPES)]
            bad, mask = add_defect(img, kind, rng)
            test.append(Sample(bad, 1, mask, kind, cat, DEMO_CLASSES.index(kind),
                               meta={"name": f"demo/{cat}/test/{i:03d}_{kind}"}))
    return Split("demo", train, test, DEMO_CLASSES)


def _crop(tex: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    H, W = tex.shape
    win = int(round(1.5 * size * rng.uniform(0.9, 1.1)))
    win = min(win, H, W)
    y, x = int(rng.integers(0, H - win + 1)), int(rng.integers(0, W - win + 1))
    patch = tex[y : y + win, x : x + win]
    if rng.random() < 0.5:
        patch = patch[::-1]
    patch = cv2.resize(np.ascontiguousarray(patch), (size, size), interpolation=cv2.INTER_AREA)
    return np.repeat(patch[..., None], 3, axis=2)


def add_defect(image: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Paint one defect of `kind` on an H x W x 3 uint8 image -> (new image, bool mask)."""
    h, w = image.shape[:2]
    s = min(h, w)
    img = image.astype(np.float32)
    if kind == "scratch":
        mask = _scratch_mask(h, w, rng)
        local = img[mask].mean()
        value = rng.uniform(215, 245) if local < 128 else rng.uniform(15, 45)
        out = img.copy()
        out[mask] = value + rng.normal(0, 6, size=(int(mask.sum()), 1))
    elif kind == "hole":
        mask = _blob_mask(h, w, rng, rng.uniform(0.05, 0.09) * s, roughness=0.25)
        out = img.copy()
        out[mask] = img[mask] * 0.2 + 8.0
        # a lighter 1-px rim just inside the hole's edge suggests depth
        rim = mask & ~cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        out[rim] = np.clip(img[rim] * 0.6 + 60.0, 0, 255)
    elif kind == "stain":
        mask = _blob_mask(h, w, rng, rng.uniform(0.08, 0.14) * s, roughness=0.35)
        tone = np.array(list(_STAIN_TONES.values())[int(rng.integers(len(_STAIN_TONES)))], np.float32)
        alpha = rng.uniform(0.3, 0.5)
        out = img.copy()
        out[mask] = (1 - alpha) * img[mask] + alpha * tone
    elif kind == "missing":
        mask = _quad_mask(h, w, rng, rng.uniform(0.15, 0.25) * s)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        g = rng.normal(0, 1, 2)
        grad = (g[0] * (yy - h / 2) + g[1] * (xx - w / 2)) / s * 20.0
        flat = img[..., 0].mean() + grad + cv2.GaussianBlur(rng.normal(0, 3, (h, w)).astype(np.float32), (0, 0), 1.5)
        out = img.copy()
        out[mask] = flat[mask][:, None]
    else:
        raise ValueError(f"unknown defect type {kind!r} (one of {', '.join(DEFECT_TYPES)})")
    return np.clip(np.round(out), 0, 255).astype(np.uint8), mask


def _inside_centre(h: int, w: int, rng: np.random.Generator, margin: float) -> tuple[float, float]:
    m = int(min(margin, min(h, w) / 2 - 1))
    return float(rng.uniform(m, w - m)), float(rng.uniform(m, h - m))


def _scratch_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    s = min(h, w)
    length = rng.uniform(0.3, 0.6) * s
    cx, cy = _inside_centre(h, w, rng, 0.1 * s)
    ang = rng.uniform(0, np.pi)
    d = np.array([np.cos(ang), np.sin(ang)]) * length / 2
    p0, p2 = np.array([cx, cy]) - d, np.array([cx, cy]) + d
    p1 = (p0 + p2) / 2 + np.array([-d[1], d[0]]) * rng.uniform(-0.5, 0.5)  # bend sideways
    t = np.linspace(0, 1, 64)[:, None]
    pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2
    pts = np.clip(np.round(pts), 0, [w - 1, h - 1]).astype(np.int32)
    m = np.zeros((h, w), np.uint8)
    cv2.polylines(m, [pts.reshape(-1, 1, 2)], False, 1, thickness=int(rng.integers(2, 4)), lineType=cv2.LINE_8)
    return m.astype(bool)


def _blob_mask(h: int, w: int, rng: np.random.Generator, radius: float, roughness: float) -> np.ndarray:
    """An irregular star-shaped polygon: radius modulated by a few random low harmonics."""
    cx, cy = _inside_centre(h, w, rng, radius * (1 + roughness) + 2)
    theta = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    r = np.ones_like(theta)
    for k in (2, 3, 5):
        r += roughness / k * rng.normal() * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    r = radius * np.clip(r, 0.5, 1.0 + roughness)
    pts = np.stack([cx + r * np.cos(theta), cy + r * np.sin(theta)], 1)
    m = np.zeros((h, w), np.uint8)
    cv2.fillPoly(m, [np.round(pts).astype(np.int32).reshape(-1, 1, 2)], 1, lineType=cv2.LINE_8)
    return m.astype(bool)


def _quad_mask(h: int, w: int, rng: np.random.Generator, side: float) -> np.ndarray:
    cx, cy = _inside_centre(h, w, rng, side * 0.75 + 2)
    ang = rng.uniform(0, np.pi / 2)
    base = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * side / 2
    base *= rng.uniform(0.8, 1.2, size=(4, 1))  # irregular corners
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    pts = base @ rot.T + [cx, cy]
    m = np.zeros((h, w), np.uint8)
    cv2.fillPoly(m, [np.round(pts).astype(np.int32).reshape(-1, 1, 2)], 1, lineType=cv2.LINE_8)
    return m.astype(bool)
