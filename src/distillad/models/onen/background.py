"""The synthetic background class (paper section 4, "Background Class"): keep the left and right
borders of a normal image, remove the rest and fill it by inpainting (Telea's fast-marching
method [79], OpenCV `cv2.INPAINT_TELEA`).

Left open by the paper, decided here: the border width (`border`, default 0.15 of the image
width on each side) and the inpainting radius (`radius`, 5 px).
"""
from __future__ import annotations

import cv2
import numpy as np


def background_region(hw: tuple[int, int], border: float = 0.15) -> np.ndarray:
    """H x W bool: True on the central band that is removed and inpainted."""
    if not 0.0 < border < 0.5:
        raise ValueError(f"border must be in (0, 0.5), got {border}")
    h, w = hw
    b = max(1, int(round(w * border)))
    region = np.zeros((h, w), dtype=bool)
    region[:, b : w - b] = True
    return region


def synthesize_background(image: np.ndarray, border: float = 0.15, radius: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """H x W x 3 uint8 normal image -> (background image, inpainted region H x W bool).
    The left and right borders are kept pixel for pixel; the centre is inpainted from them."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    region = background_region(image.shape[:2], border)
    out = cv2.inpaint(image, region.astype(np.uint8) * 255, radius, cv2.INPAINT_TELEA)
    out[~region] = image[~region]
    return out, region
