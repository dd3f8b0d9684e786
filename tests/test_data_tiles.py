"""Tiling (OneN's nine patches per PCB image): every pixel lands in exactly one tile, labels,
boxes and masks follow the pixels, the seeded sub-sample, and the dataset-spec option."""
import numpy as np
import pytest
from PIL import Image

from distillad.data import Sample, Split, open_dataset
from distillad.data.tiles import tile_sample, tile_split
from distillad.errors import DataError


def write(path, a):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
    return str(path)


def test_tiles_cover_the_image_and_carry_its_mask(tmp_path):
    img = np.arange(31 * 40 * 3, dtype=np.uint32).reshape(31, 40, 3).astype(np.uint8)
    mask = np.zeros((31, 40), np.uint8)
    mask[2:5, 30:34] = 255                      # top-right tile only (columns 27..39, rows 0..9)
    s = Sample(write(tmp_path / "a.png", img), 1, write(tmp_path / "a_mask.png", mask), "crack", class_id=3)
    tiles = tile_sample(s, 3)
    assert len(tiles) == 9
    whole = np.zeros_like(img)
    for t in tiles:
        x0, y0, x1, y1 = t.crop
        whole[y0:y1, x0:x1] = t.load_image()
        assert t.image_size() == (y1 - y0, x1 - x0) == t.load_image().shape[:2]
    assert np.array_equal(whole, img)           # the tiles are the image, pixel for pixel
    bad = [t for t in tiles if t.label]
    assert [t.meta["tile"] for t in bad] == [(0, 2)]
    assert bad[0].class_id == 3 and bad[0].defect_type == "crack"
    m = bad[0].load_mask()
    x0, y0, _, _ = bad[0].crop
    assert m.shape == bad[0].image_size() and m.sum() == 12 and m[2 - y0, 30 - x0]
    good = [t for t in tiles if not t.label]
    assert all(t.class_id == 0 and t.defect_type == "good" and not t.load_mask().any() for t in good)
    assert bad[0].name.endswith("@27,0+13x10") and len({t.name for t in tiles}) == 9


def test_tiles_clip_boxes_and_keep_per_box_metadata(tmp_path):
    path = write(tmp_path / "pcb.png", np.zeros((30, 30, 3), np.uint8))
    s = Sample(path, 1, None, "defect", "pcb", 1, ((5, 5, 14, 8), (25, 25, 27, 27)),
               {"defect_types": ("open", "short")})
    tiles = {t.meta["tile"]: t for t in tile_sample(s, 3)}
    assert tiles[(0, 0)].boxes == ((5, 5, 9, 8),) and tiles[(0, 1)].boxes == ((0, 5, 4, 8),)
    assert tiles[(0, 1)].meta["defect_types"] == ("open",) and tiles[(2, 2)].meta["defect_types"] == ("short",)
    assert {k for k, t in tiles.items() if t.label} == {(0, 0), (0, 1), (2, 2)}
    m = tiles[(0, 1)].load_mask()
    assert m.sum() == 5 * 4 and m[5, 0] and m[8, 4]


def test_tiling_errors_name_the_file(tmp_path):
    path = write(tmp_path / "x.png", np.zeros((12, 12, 3), np.uint8))
    with pytest.raises(DataError, match=r"x\.png: defective image without mask or boxes"):
        tile_sample(Sample(path, 1), 3)
    with pytest.raises(DataError, match=r"x\.png: image 12x12 is smaller"):
        tile_sample(Sample(path), 13)
    with pytest.raises(DataError, match="lies outside the image"):
        Sample(path, crop=(0, 0, 20, 5)).load_image()


def test_tile_keep_is_seeded_per_side(tmp_path):
    samples = [Sample(write(tmp_path / f"{i}.png", np.full((9, 9, 3), i, np.uint8))) for i in range(10)]
    sp = Split("s", samples[:6], samples[6:])
    a, b = tile_split(sp, 3, keep=0.2, seed=1), tile_split(sp, 3, keep=0.2, seed=1)
    assert len(a.train) == round(0.2 * 54) and len(a.test) == round(0.2 * 36)
    assert [t.name for t in a.train] == [t.name for t in b.train]
    assert [t.name for t in a.train] != [t.name for t in tile_split(sp, 3, keep=0.2, seed=2).train]
    with pytest.raises(ValueError, match="tile_keep"):
        tile_split(sp, 3, keep=0)


def test_dataset_spec_tiles_option(tmp_path):
    root = tmp_path / "cat"
    for i in range(4):
        write(root / "train" / "good" / f"{i}.png", np.full((12, 12, 3), 100, np.uint8))
    write(root / "test" / "good" / "0.png", np.full((12, 12, 3), 100, np.uint8))
    mask = np.zeros((12, 12), np.uint8)
    mask[0:2, 0:2] = 255
    write(root / "test" / "dent" / "0.png", np.full((12, 12, 3), 100, np.uint8))
    write(root / "ground_truth" / "dent" / "0_mask.png", mask)
    sp = open_dataset(f"mvtec:{root}?tiles=2")
    assert len(sp.train) == 16 and len(sp.test) == 8
    assert sum(t.label for t in sp.test) == 1 and sp.name.endswith("_tiles2")
    assert len(open_dataset(f"mvtec:{root}?tiles=2&tile_keep=0.5").train) == 8
    with pytest.raises(DataError, match="tile_keep"):
        open_dataset(f"mvtec:{root}?tile_keep=2")
