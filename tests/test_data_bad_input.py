"""Bad input: a DataError naming the file, or the documented conversion (samples.py docstring)."""
import cv2
import numpy as np
import pytest
from PIL import Image

from distillad.data import Sample, mvtec, read_image, read_mask
from distillad.errors import DataError


def rgb(hw=(12, 16)):
    return np.random.default_rng(0).integers(0, 256, (*hw, 3), dtype=np.uint8)


def test_truncated_jpeg_names_the_file(tmp_path):
    Image.fromarray(rgb((64, 64))).save(tmp_path / "ok.jpg", quality=95)
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.jpg: cannot read image"):
        read_image(tmp_path / "cut.jpg")
    with pytest.raises(DataError, match=r"cut\.jpg"):
        Sample(str(tmp_path / "cut.jpg")).load_image()


def test_text_file_named_png(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("this is not an image")
    with pytest.raises(DataError, match=r"notes\.png: cannot read image"):
        read_image(p)
    with pytest.raises(DataError, match=r"notes\.png"):
        Sample(str(p)).image_size()
    with pytest.raises(DataError, match=r"notes\.png: cannot read mask"):
        read_mask(p)


def test_missing_files(tmp_path):
    with pytest.raises(DataError, match=r"gone\.png: image file not found"):
        read_image(tmp_path / "gone.png")
    Image.fromarray(rgb()).save(tmp_path / "a.png")
    s = Sample(str(tmp_path / "a.png"), 1, str(tmp_path / "a_mask.png"), "crack")
    with pytest.raises(DataError, match=r"a_mask\.png: mask file not found"):
        s.load_mask()
    with pytest.raises(DataError, match=r"a\.png: anomalous sample has no mask"):
        Sample(str(tmp_path / "a.png"), 1, None, "crack").load_mask()


def test_mask_of_another_size_is_an_error_naming_both(tmp_path):
    Image.fromarray(rgb((12, 16))).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((12, 15), np.uint8)).save(tmp_path / "a_mask.png")
    s = Sample(str(tmp_path / "a.png"), 1, str(tmp_path / "a_mask.png"), "crack")
    with pytest.raises(DataError) as e:
        s.load_mask()
    assert "a_mask.png" in str(e.value) and "a.png" in str(e.value) and "15x12" in str(e.value)


def test_wrong_size_mask_in_an_mvtec_folder(tmp_path):
    root = tmp_path / "widget"
    for d in ("train/good", "test/good", "test/crack", "ground_truth/crack"):
        (root / d).mkdir(parents=True)
    Image.fromarray(rgb()).save(root / "train/good/000.png")
    Image.fromarray(rgb()).save(root / "test/good/000.png")
    Image.fromarray(rgb()).save(root / "test/crack/000.png")
    Image.fromarray(np.zeros((24, 32), np.uint8)).save(root / "ground_truth/crack/000_mask.png")
    bad = [s for s in mvtec(root).test if s.label][0]
    with pytest.raises(DataError, match=r"000_mask\.png: mask is 32x24 .* but image .*000\.png is 16x12"):
        bad.load_mask()


def test_sixteen_bit_images_are_scaled_to_eight_bit(tmp_path):
    g = (np.arange(12 * 16).reshape(12, 16) * 300).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), g)
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out = read_image(tmp_path / "g16.png")
    assert out.shape == (12, 16, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 0], (g / 257.0).astype(np.uint8))
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    # a 16-bit mask is thresholded at 128 after the same scaling
    np.testing.assert_array_equal(read_mask(tmp_path / "g16.png"), g / 257.0 >= 128)
    # 16-bit RGB (48-bit PNG): Pillow reduces it to 8 bit per channel
    c = (np.arange(12 * 16 * 3).reshape(12, 16, 3) * 300 % 65536).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "c16.png"), c)
    out = read_image(tmp_path / "c16.png").astype(int)
    assert np.abs(out - c[..., ::-1] / 257.0).max() <= 1


def test_rgba_palette_and_gray_conversions(tmp_path):
    a = rgb()
    rgba = np.concatenate([a, np.full((12, 16, 1), 7, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), a)   # alpha dropped, colours kept
    pal = Image.fromarray(a).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal.save(tmp_path / "pal.png")
    assert Image.open(tmp_path / "pal.png").mode == "P"
    np.testing.assert_array_equal(read_image(tmp_path / "pal.png"), np.asarray(pal.convert("RGB")))
    Image.fromarray(a[..., 0]).save(tmp_path / "gray.png")
    out = read_image(tmp_path / "gray.png")
    assert out.shape == (12, 16, 3) and np.array_equal(out[..., 1], a[..., 0])


def test_float_tiff_is_refused(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(DataError, match=r"f\.tif.*floating-point"):
        read_image(tmp_path / "f.tif")


def test_in_memory_arrays(tmp_path):
    s = Sample(np.zeros((5, 6, 4), np.uint8), meta={"name": "arr"})
    assert s.load_image().shape == (5, 6, 3)
    with pytest.raises(DataError, match="arr"):
        Sample(np.zeros((5, 6, 2), np.uint8), meta={"name": "arr"}).load_image()
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        Sample(np.full((5, 6), 2.0), meta={"name": "arr"}).load_image()
