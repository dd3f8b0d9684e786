"""The embedded demo set: offline textures, exact masks, deterministic from the seed."""
from collections import Counter

import numpy as np
import pytest
from scipy import ndimage

from distillad.data import DEMO_CLASSES, demo_dataset
from distillad.data.demo import DEFECT_TYPES, DEMO_TEXTURES, _crop, add_defect, load_texture
from distillad.errors import DataError

SMALL = dict(n_train=3, n_test=6, size=64)


@pytest.mark.parametrize("name", sorted(DEMO_TEXTURES))
def test_textures_load_offline(name):
    tex = load_texture(name)
    assert tex.dtype == np.uint8 and tex.ndim == 2 and min(tex.shape) >= 256 and tex.std() > 10


def test_unknown_texture_is_an_error():
    with pytest.raises(DataError, match="rough_wall"):
        demo_dataset(categories=("rough_wall",), **SMALL)


def test_demo_structure():
    sp = demo_dataset(seed=0, **SMALL)
    assert sp.categories == ["brick", "grass", "gravel"] and sp.class_names == DEMO_CLASSES
    assert len(sp.train) == 9 and len(sp.test) == 18
    assert all(s.label == 0 and s.mask is None for s in sp.train)
    for s in sp.test:
        img = s.load_image()
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        assert DEMO_CLASSES[s.class_id] == s.defect_type and (s.label == 1) == (s.defect_type != "good")
        m = s.load_mask()
        assert m.shape == (64, 64) and (m.any() == bool(s.label))
    per_cat = Counter((s.category, s.defect_type) for s in sp.test)
    assert per_cat[("grass", "good")] == 2 and all(per_cat[("grass", d)] == 1 for d in DEFECT_TYPES)


def test_same_seed_same_arrays_other_seed_other_arrays():
    a, b, c = demo_dataset(seed=5, **SMALL), demo_dataset(seed=5, **SMALL), demo_dataset(seed=6, **SMALL)
    for x, y in zip(a.train + a.test, b.train + b.test):
        assert np.array_equal(x.image, y.image) and x.defect_type == y.defect_type
        assert (x.mask is None and y.mask is None) or np.array_equal(x.mask, y.mask)
    assert not all(np.array_equal(x.image, z.image) for x, z in zip(a.test, c.test))
    # a category does not depend on which other categories are generated with it
    grass = demo_dataset(seed=5, categories=("grass",), **SMALL)
    assert all(np.array_equal(x.image, y.image) for x, y in zip(grass.test, [s for s in a.test if s.category == "grass"]))


@pytest.mark.parametrize("kind", DEFECT_TYPES)
@pytest.mark.parametrize("texture", sorted(DEMO_TEXTURES))
def test_masks_are_exactly_the_changed_pixels(kind, texture):
    tex = load_texture(texture)
    for seed in range(4):
        rng = np.random.default_rng(seed)
        img = _crop(tex, rng, 96)
        bad, mask = add_defect(img, kind, rng)
        changed = (bad != img).any(axis=2)
        assert not changed[~mask].any()                    # nothing changes outside the mask
        assert changed[mask].mean() > 0.95                  # and the mask is (nearly) all changed
        assert ndimage.label(mask)[1] == 1                  # one connected region
        assert 0.003 < mask.mean() < 0.1                    # a defect, not the whole image
        # visible: a clear mean change inside the mask
        assert np.abs(bad.astype(int) - img.astype(int))[mask].mean() > 10
