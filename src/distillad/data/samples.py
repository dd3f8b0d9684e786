"""The unit every loader produces and every model consumes: a `Sample`.

Images are read lazily from their path (or held in memory); `load_image` always returns
H x W x 3 uint8 RGB and `load_mask` an H x W bool array at the image's own resolution.
Documented conversions (everything else is an error naming the file):
- grayscale -> replicated to 3 channels; palette (P) -> RGB; RGBA / LA -> alpha dropped
  (composited on black is *not* done: the colour channels are kept as stored);
- 16-bit images (I;16, and I holding values 0..65535) -> scaled to 8 bit (x / 257); other
  32-bit integer images are an error;
- masks: any mode; a pixel is anomalous when its value is >= 128 (after conversion to 8-bit
  grayscale), the threshold MTSD's README asks for. A mask of another size than its image is
  an error, never silently resized.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

ImageLike = "str | os.PathLike | np.ndarray"


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as H x W x 3 uint8 RGB (see the module docstring for conversions)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            im.load()
            return pil_to_rgb(im, path)
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot read image ({e})") from None


def pil_to_rgb(im: Image.Image, path: object = "<image>") -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im).astype(np.float64)
        if im.mode == "I" and a.size and (a.min() < 0 or a.max() > 65535):
            raise DataError(f"{path}: 32-bit integer image with values outside 0..65535 is not supported")
        a = np.clip(a / 257.0, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if im.mode == "F":
        raise DataError(f"{path}: floating-point images are not supported (mode F)")
    if im.mode in ("RGBA", "LA", "P", "PA", "CMYK", "YCbCr", "L", "1", "LAB", "HSV", "RGBX"):
        im = im.convert("RGB")
    elif im.mode != "RGB":
        raise DataError(f"{path}: unsupported image mode {im.mode!r}")
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


def as_rgb_array(image: np.ndarray, what: object = "<array>") -> np.ndarray:
    """Validate / convert an in-memory image to H x W x 3 uint8."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[..., :3]
    if a.ndim != 3 or a.shape[2] != 3:
        raise DataError(f"{what}: expected an H x W, H x W x 1, x 3 or x 4 image, got shape {a.shape}")
    if a.dtype == np.uint16:
        a = (a.astype(np.float64) / 257.0).astype(np.uint8)
    elif a.dtype in (np.float32, np.float64):
        if a.size and (a.min() < 0 or a.max() > 1):
            raise DataError(f"{what}: float images must lie in [0, 1]")
        a = np.round(a * 255).astype(np.uint8)
    elif a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        raise DataError(f"{what}: unsupported dtype {a.dtype}")
    return np.ascontiguousarray(a)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: mask file not found")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                a = np.asarray(im).astype(np.float64) / 257.0
            else:
                a = np.asarray(im.convert("L"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot read mask ({e})") from None
    return a >= 128


@dataclass(frozen=True, eq=False)  # identity equality: in-memory images are arrays
class Sample:
    """One image with what is known about it.

    image: a path or an in-memory array. label: 0 normal, 1 anomalous.
    mask: path, bool array or None (None with label 0 means an all-normal mask; None with
    label 1 means "anomalous, no pixel ground truth").
    defect_type: "good" for normal images, else the defect folder / class name.
    class_id: integer class for classifiers (0 = normal/free); category: object category for
    multi-class training. boxes: (x1, y1, x2, y2) pixel boxes (weak supervision).
    crop: (x0, y0, x1, y1), end exclusive: the sample is this window of the image and of its mask
    file (a tile, see `data.tiles`); boxes are then in the window's coordinates.
    """

    image: object
    label: int = 0
    mask: object = None
    defect_type: str = "good"
    category: str = ""
    class_id: int = 0
    boxes: tuple = ()
    meta: dict = field(default_factory=dict, compare=False, hash=False)
    crop: tuple | None = None

    @property
    def name(self) -> str:
        if isinstance(self.image, (str, os.PathLike)):
            base = str(self.image)
        else:
            base = self.meta.get("name", f"<array {self.category}/{self.defect_type}>")
        if self.crop is None:
            return base
        x0, y0, x1, y1 = self.crop
        return f"{base}@{x0},{y0}+{x1 - x0}x{y1 - y0}"

    def load_image(self) -> np.ndarray:
        if isinstance(self.image, (str, os.PathLike)):
            return self._cropped(read_image(self.image), "image")
        return self._cropped(as_rgb_array(self.image, self.name), "image")

    def _cropped(self, a: np.ndarray, what: str) -> np.ndarray:
        if self.crop is None:
            return a
        x0, y0, x1, y1 = self.crop
        h, w = a.shape[:2]
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise DataError(f"{self.name}: crop window {self.crop} lies outside the {what} ({w}x{h})")
        return np.ascontiguousarray(a[y0:y1, x0:x1])

    def image_size(self) -> tuple[int, int]:
        """(H, W) without decoding the pixels where possible (of the crop window, for a tile)."""
        if self.crop is not None:
            x0, y0, x1, y1 = self.crop
            return y1 - y0, x1 - x0
        return self._full_size()

    def _full_size(self) -> tuple[int, int]:
        if isinstance(self.image, (str, os.PathLike)):
            try:
                with Image.open(self.image) as im:
                    return im.size[1], im.size[0]
            except (UnidentifiedImageError, OSError) as e:
                raise DataError(f"{self.image}: cannot read image ({e})") from None
        return tuple(np.asarray(self.image).shape[:2])

    @property
    def has_mask(self) -> bool:
        return self.mask is not None or self.label == 0 or bool(self.boxes)

    def load_mask(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """Ground-truth mask (H x W bool) at the image's resolution.

        Normal samples without a mask give all-False; box-only samples give box masks. A
        mask whose size differs from the image is an error naming both files.
        """
        hw = tuple(size) if size is not None else self.image_size()
        if self.crop is not None and self.mask is not None:  # a window of the whole image's mask
            full = replace(self, crop=None).load_mask(self._full_size())
            return self._cropped(full, "mask")
        if self.mask is None:
            m = np.zeros(hw, dtype=bool)
            if self.boxes:
                m = boxes_to_mask(self.boxes, hw)
            elif self.label != 0:
                raise DataError(f"{self.name}: anomalous sample has no mask")
            return m
        if isinstance(self.mask, (str, os.PathLike)):
            m = read_mask(self.mask)
            where = str(self.mask)
        else:
            m = np.asarray(self.mask).astype(bool)
            where = f"mask of {self.name}"
        if m.shape != hw:
            raise DataError(f"{where}: mask is {m.shape[1]}x{m.shape[0]} (WxH) but image {self.name} is {hw[1]}x{hw[0]}")
        return m

    def with_(self, **kw) -> "Sample":
        return replace(self, **kw)


def boxes_to_mask(boxes: Sequence[Sequence[float]], hw: tuple[int, int]) -> np.ndarray:
    """Weak masks: each (x1, y1, x2, y2) box (inclusive pixel coordinates) filled with True."""
    m = np.zeros(hw, dtype=bool)
    h, w = hw
    for b in boxes:
        x1, x2 = sorted(int(round(v)) for v in (b[0], b[2]))
        y1, y2 = sorted(int(round(v)) for v in (b[1], b[3]))
        if x2 < 0 or y2 < 0 or x1 > w - 1 or y1 > h - 1:
            continue  # entirely outside the image: marks nothing
        m[max(0, y1) : min(h - 1, y2) + 1, max(0, x1) : min(w - 1, x2) + 1] = True
    return m


@dataclass
class Split:
    """A train/test split of one dataset (or of several categories for multi-class runs)."""

    name: str
    train: list[Sample]
    test: list[Sample]
    class_names: tuple[str, ...] = ()  # for classification: index = Sample.class_id

    @property
    def categories(self) -> list[str]:
        return sorted({s.category for s in self.test} | {s.category for s in self.train})

    def category(self, cat: str) -> "Split":
        return Split(f"{self.name}/{cat}", [s for s in self.train if s.category == cat],
                     [s for s in self.test if s.category == cat], self.class_names)
