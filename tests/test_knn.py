"""The reference detector: it finds a planted defect, saves/loads exactly, refuses a foreign
teacher, and its coreset spreads over the data."""
import numpy as np
import pytest
import torch

import distillad
from distillad.errors import ModelFileError
from distillad.models.knn import greedy_coreset
from distillad.teachers import create

from helpers import synthetic_split

TINY = {"name": "test_cnn_tiny", "weights": "random"}


def _fit(**kw):
    train, test = synthetic_split()
    model = distillad.create_model("knn", teacher=TINY, layers=(2, 3), image_size=64, **kw).fit(train, progress=False)
    return model, test


def test_planted_defect_raises_the_map_at_its_place():
    model, test = _fit()
    pred = model.predict(test)
    assert [m.shape for m in pred.maps] == [(64, 64)] * len(test)
    for s, amap, score in zip(test, pred.maps, pred.scores):
        if s.label:
            mask = s.load_mask()
            assert amap[mask].mean() > 2 * amap[~mask].mean()
    normal = pred.scores[[s.label == 0 for s in test]]
    bad = pred.scores[[s.label == 1 for s in test]]
    assert bad.min() > normal.max()
    assert model.threshold_ is not None and normal.max() < bad.min()


def test_save_load_identical_and_foreign_teacher_refused(tmp_path):
    model, test = _fit()
    model.save(tmp_path / "m")
    back = distillad.load(tmp_path / "m")
    a, b = model.predict(test), back.predict(test)
    np.testing.assert_array_equal(a.scores, b.scores)
    for x, y in zip(a.maps, b.maps):
        np.testing.assert_array_equal(x, y)
    other = create("test_cnn_tiny", weights="random", seed=1)
    with pytest.raises(ModelFileError, match="trained with teacher test_cnn_tiny.*fingerprint"):
        distillad.load(tmp_path / "m", teacher=other)


def test_bank_is_bounded_by_ratio_and_cap():
    model, _ = _fit(coreset_ratio=0.05)
    n_patches = 8 * (64 // 4) ** 2  # 8 images, stride-4 grid
    assert len(model.bank_) == round(0.05 * n_patches)
    model, _ = _fit(max_bank=50)
    assert len(model.bank_) == 50


def test_greedy_coreset_covers_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0] * 8, [10.0] * 8, [-10.0] * 8, [10.0] * 4 + [-10.0] * 4])
    x = torch.cat([c + 0.1 * torch.randn(500, 8, generator=g) for c in centres])
    idx = greedy_coreset(x, 4)
    assert sorted((idx // 500).tolist()) == [0, 1, 2, 3]  # one point from each cluster


def test_bad_parameters_are_reported_at_fit():
    train, _ = synthetic_split(n_train=2)
    with pytest.raises(ValueError, match="layer 9 out of range"):
        distillad.create_model("knn", teacher=TINY, layers=(2, 9), image_size=64).fit(train, progress=False)
    with pytest.raises(ValueError, match="coreset_ratio"):
        distillad.create_model("knn", teacher=TINY, image_size=64, layers=(2, 3), coreset_ratio=0).fit(train, progress=False)
