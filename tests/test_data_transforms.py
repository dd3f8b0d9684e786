"""Geometry-aware preprocessing: maps made at model size come back onto the original image."""
import numpy as np
import pytest
import torch

from distillad.data.transforms import Preprocess

MODES = [
    Preprocess(64, mode="resize"),
    Preprocess(64, mode="pad_resize"),
    Preprocess(56, mode="resize_crop", resize=64),
]
SHAPES = [(64, 64), (90, 150), (150, 90), (37, 101)]


@pytest.mark.parametrize("pre", MODES, ids=lambda p: p.mode)
@pytest.mark.parametrize("hw", SHAPES)
def test_restore_returns_original_size(pre, hw):
    img = np.random.default_rng(0).integers(0, 256, (*hw, 3), dtype=np.uint8)
    t, g = pre(img)
    assert tuple(t.shape) == (3, pre.size, pre.size)
    for map_size in (pre.size, 14, 7):          # full resolution or a feature-map grid
        out = g.restore(np.ones((map_size, map_size), np.float32))
        assert out.shape == hw and out.dtype == np.float32
        np.testing.assert_allclose(out, 1.0, atol=1e-6)
    out = g.restore(torch.ones(5, 5))           # tensors are accepted too
    assert out.shape == hw


def test_restore_rejects_non_2d_maps():
    _, g = Preprocess(32)(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ValueError):
        g.restore(np.zeros((1, 32, 32)))


def test_pad_resize_pads_with_edge_pixels_centred():
    img = np.zeros((20, 60, 3), np.uint8)
    img[0] = 200   # top row
    img[-1] = 100  # bottom row
    pre = Preprocess(60, mode="pad_resize")
    arr, g = pre.apply_array(img)
    assert g.pad == (20, 20, 0, 0)
    assert arr.shape == (60, 60, 3)
    # edge padding replicates the border rows, it does not add black bars
    assert np.all(arr[:20] == 200) and np.all(arr[40:] == 100)


def _pad_marking_map(g, size):
    """Model-size map = 1 on model pixels whose centre lies in the padding, 0 elsewhere."""
    pt, pb, pl, pr = g.pad
    H, W = g.orig_hw
    ph, pw = H + pt + pb, W + pl + pr
    yc = (np.arange(size) + 0.5) * ph / size
    xc = (np.arange(size) + 0.5) * pw / size
    in_pad = ((yc < pt) | (yc >= pt + H))[:, None] | ((xc < pl) | (xc >= pl + W))[None, :]
    return in_pad.astype(np.float32), max(ph, pw) / size


@pytest.mark.parametrize("hw", [(100, 300), (64, 128), (300, 100), (50, 51)])
def test_padding_is_removed_and_does_not_spread_into_the_image(hw):
    pre = Preprocess(64, mode="pad_resize")
    _, g = pre(np.zeros((*hw, 3), np.uint8))
    amap, cell = _pad_marking_map(g, 64)
    out = g.restore(amap)
    assert out.shape == hw
    # interpolation may touch the image pixels within one model cell of the border, never deeper
    k = int(np.ceil(cell))
    if hw[0] < hw[1]:
        interior = out[k:-k]
    else:
        interior = out[:, k:-k]
    assert interior.size and np.all(interior == 0)


def test_padding_value_does_not_leak_into_the_outermost_image_rows():
    pre = Preprocess(64, mode="pad_resize")
    _, g = pre(np.zeros((64, 128, 3), np.uint8))   # model cells align exactly with the pad boundary
    amap, _ = _pad_marking_map(g, 64)
    assert g.restore(amap).max() == 0


def test_resize_crop_is_edge_extended_outside_the_crop():
    pre = Preprocess(48, mode="resize_crop", resize=64)
    _, g = pre(np.zeros((64, 64, 3), np.uint8))
    assert g.crop == (8, 8, 48, 48)
    amap = np.tile(np.linspace(0, 1, 48, dtype=np.float32), (48, 1)) + np.linspace(0, 2, 48, dtype=np.float32)[:, None]
    out = g.restore(amap)
    assert out.shape == (64, 64)
    np.testing.assert_allclose(out[8:56, 8:56], amap, atol=1e-6)
    # outside the crop each pixel takes the value of the nearest crop pixel
    np.testing.assert_allclose(out[8:56, :8], np.repeat(amap[:, :1], 8, axis=1), atol=1e-6)
    np.testing.assert_allclose(out[8:56, 56:], np.repeat(amap[:, -1:], 8, axis=1), atol=1e-6)
    np.testing.assert_allclose(out[:8, 8:56], np.repeat(amap[:1], 8, axis=0), atol=1e-6)
    np.testing.assert_allclose(out[:8, :8], amap[0, 0], atol=1e-6)


@pytest.mark.parametrize("pre", MODES, ids=lambda p: p.mode)
@pytest.mark.parametrize("hw,box", [((120, 120), (50, 40, 20, 20)),   # (y, x, h, w) of the square
                                    ((90, 160), (30, 100, 24, 24)),
                                    ((160, 90), (100, 30, 24, 24)),
                                    ((75, 200), (20, 60, 30, 30))])
def test_planted_square_round_trip(pre, hw, box):
    """A map that finds the square at model size lands on the square in the original image."""
    y, x, h, w = box
    img = np.zeros((*hw, 3), np.uint8)
    img[y : y + h, x : x + w] = 255
    truth = img[..., 0] > 0
    arr, g = pre.apply_array(img)
    model_map = arr[..., 0].astype(np.float32) / 255.0      # "the model" sees the square exactly
    back = g.restore(model_map) > 0.5
    inter, union = (back & truth).sum(), (back | truth).sum()
    assert inter / union > 0.8
    cy, cx = np.argwhere(back).mean(0)
    ty, tx = np.argwhere(truth).mean(0)
    assert abs(cy - ty) <= 1.0 and abs(cx - tx) <= 1.0
    # and at a coarse feature-map resolution (16 x 16) it still lands at the right place
    coarse = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(model_map)[None, None], 16)[0, 0]
    back = g.restore(coarse)
    py, px = np.unravel_index(np.argmax(back), back.shape)
    assert truth[py, px] or np.hypot(py - ty, px - tx) < max(hw) / 16 + 2


def test_preprocess_config_round_trip_and_validation():
    pre = Preprocess(56, mode="resize_crop", resize=64, interpolation="bicubic")
    assert Preprocess.from_config(pre.to_config()) == pre
    with pytest.raises(ValueError):
        Preprocess(64, mode="stretch")
    with pytest.raises(ValueError):
        Preprocess(64, mode="resize_crop", resize=32)
    with pytest.raises(ValueError):
        Preprocess(64, interpolation="lanczos9")


def test_normalisation_uses_imagenet_statistics():
    pre = Preprocess(8)
    t, _ = pre(np.full((8, 8, 3), 255, np.uint8))
    expected = (1.0 - np.array(pre.mean)) / np.array(pre.std)
    np.testing.assert_allclose(t[:, 0, 0].numpy(), expected, rtol=1e-5)
    batch, geoms = pre.batch([np.zeros((10, 20, 3), np.uint8), np.zeros((30, 5, 3), np.uint8)])
    assert tuple(batch.shape) == (2, 3, 8, 8) and [gm.orig_hw for gm in geoms] == [(10, 20), (30, 5)]
