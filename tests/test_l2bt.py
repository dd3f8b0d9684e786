"""L2BT (models/l2bt.py): geometry, learning, anomaly localisation, persistence, resumption and
the feature cache, on tiny random teachers and synthetic images (seconds in total)."""
import numpy as np
import pytest
import torch

from distillad.data.samples import Sample
from distillad.errors import ModelFileError
from distillad.models.base import create_model, load
from distillad.models.l2bt import L2BT, normalised_l2, top_mean

SIZE = 56  # 4 x 4 patches of 14 px for the tiny ViT


def vit(seed=0):
    from distillad.teachers import create
    return create("test_vit_tiny", weights="random", seed=seed)


def cnn():
    from distillad.teachers import create
    return create("test_cnn_tiny", weights="random")


def texture(rng, h=42, w=70):
    """A normal image: horizontal stripes plus a little noise."""
    y = np.arange(h)[:, None, None]
    base = 128 + 60 * np.sin(y / 3.0) + np.zeros((h, w, 3))
    return (base + rng.normal(0, 6, (h, w, 3))).clip(0, 255).astype(np.uint8)


def train_set(n=8, seed=0, h=42, w=70):
    rng = np.random.default_rng(seed)
    return [Sample(image=texture(rng, h, w), label=0) for _ in range(n)]


def small(teacher, **kw):
    params = dict(teacher=teacher, image_size=SIZE, epochs=8, batch_size=4, lr=1e-3, seed=0)
    params.update(kw)
    return L2BT(**params)


def test_registered_and_paper_defaults():
    m = create_model("l2bt", teacher="x")
    assert isinstance(m, L2BT)
    assert (m.epochs, m.batch_size, m.lr, m.fusion, m.top_k_fraction, m.preprocess_mode) == \
        (50, 4, 1e-4, "product", 0.001, "pad_resize")


def test_resolved_defaults_for_vit_and_cnn():
    t = vit()
    m = L2BT(teacher=t)
    r = m._resolve(t)
    assert r["layers"] == [3, 4] and r["final_norm"] is True and r["image_size"] == 74 * 14
    c = cnn()
    r = L2BT(teacher=c)._resolve(c)
    assert r["final_norm"] is False and r["image_size"] == 256
    assert r["layers"] == [c.num_layers - 2, c.num_layers - 1]
    with pytest.raises(ValueError, match="final_norm"):
        L2BT(teacher=c, final_norm=True)._resolve(c)
    with pytest.raises(ValueError, match="multiple of 14"):
        L2BT(teacher=t, image_size=100)._resolve(t)
    with pytest.raises(ValueError, match="j < k"):
        L2BT(teacher=t, layers=(4, 2))._resolve(t)


def test_maps_on_original_geometry_with_padding_removed():
    train = train_set(4)
    m = small(vit(), epochs=2).fit(train, progress=False)
    rng = np.random.default_rng(5)
    imgs = [texture(rng, 42, 70), texture(rng, 80, 30), texture(rng, 56, 56)]
    pred = m.predict(imgs)
    assert [mp.shape for mp in pred.maps] == [(42, 70), (80, 30), (56, 56)]
    assert all(mp.dtype == np.float32 and np.isfinite(mp).all() for mp in pred.maps)
    assert pred.scores.shape == (3,)
    # the image score is the mean of the top 0.1 % of the final map's pixels
    for s, mp in zip(pred.scores, pred.maps):
        assert s == pytest.approx(top_mean(mp, 0.001), rel=1e-6)
    # without smoothing, the map is the fused patch map bilinearly restored: the padding rows
    # (14 above and 14 below the 42 x 70 image in its 70 x 70 square) are cut, not squeezed in
    m0 = small(vit(), epochs=2, smoothing_sigma=0).fit(train, progress=False)
    x, geoms = m0._preprocess().batch([imgs[0]])
    dj, dk = m0.patch_deltas(x)
    up = torch.nn.functional.interpolate((dj * dk)[:, None], size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    full = torch.nn.functional.interpolate(up, size=(70, 70), mode="bilinear", align_corners=False)[0, 0].numpy()
    got = m0.predict([imgs[0]]).maps[0]
    assert geoms[0].pad[:2] == (14, 14)
    np.testing.assert_allclose(got, full[14:56], rtol=1e-3, atol=1e-4)


def test_students_learn():
    m = small(vit(), epochs=10).fit(train_set(8), progress=False)
    first, last = m.loss_history_[0], m.loss_history_[-1]
    assert len(m.loss_history_) == 10
    assert last["forward"] < 0.7 * first["forward"]
    assert last["backward"] < 0.7 * first["backward"]


def test_planted_defect_raises_the_map_at_its_place():
    train = train_set(12, seed=1, h=56, w=84)
    m = small(vit(), epochs=30, smoothing_sigma=2.0).fit(train, progress=False)
    rng = np.random.default_rng(7)
    img = texture(rng, 56, 84)
    normal_score = m.predict([img]).scores[0]
    img[28:42, 56:70] = (255, 0, 255)  # one patch-sized magenta square, right of centre
    pred = m.predict([img])
    amap = pred.maps[0]
    assert pred.scores[0] > normal_score
    inside = amap[28:42, 56:70].mean()
    outside = np.concatenate([amap[:, :42].ravel(), amap[:14].ravel()]).mean()
    assert inside > 2 * outside
    y, x = np.unravel_index(np.argmax(amap), amap.shape)
    assert 21 <= y < 49 and 49 <= x < 77  # the peak within half a patch of the square


def test_save_load_identical_maps(tmp_path):
    m = small(vit(), epochs=3).fit(train_set(4), progress=False)
    rng = np.random.default_rng(3)
    imgs = [texture(rng, 42, 70), texture(rng, 30, 30)]
    before = m.predict(imgs)
    m.save(tmp_path / "model")
    back = load(tmp_path / "model")
    assert isinstance(back, L2BT) and back.layers_ == m.layers_
    after = back.predict(imgs)
    np.testing.assert_array_equal(before.scores, after.scores)
    for a, b in zip(before.maps, after.maps):
        np.testing.assert_array_equal(a, b)
    assert back.threshold_ == m.threshold_


def test_load_refuses_another_teacher(tmp_path):
    m = small(vit(), epochs=1).fit(train_set(4), progress=False)
    m.save(tmp_path / "model")
    other = vit(seed=1)  # same architecture, other weights
    with pytest.raises(ModelFileError, match="teacher"):
        load(tmp_path / "model", teacher=other)
    with pytest.raises(ModelFileError, match="test_vit_tiny"):
        load(tmp_path / "model", teacher=cnn())


def test_interrupted_training_resumes_to_the_same_students(tmp_path, monkeypatch):
    train = train_set(6)  # 2 steps per epoch
    ref = small(vit(), epochs=3, checkpoint_every=1).fit(train, progress=False)

    calls = {"n": 0}
    real_step = torch.optim.Adam.step

    def failing_step(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 4:  # interrupted in the middle of epoch 2, after 3 steps
            raise KeyboardInterrupt
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", failing_step)
    with pytest.raises(KeyboardInterrupt):
        small(vit(), epochs=3, checkpoint_every=1).fit(train, checkpoint_dir=tmp_path / "ck", progress=False)
    monkeypatch.setattr(torch.optim.Adam, "step", real_step)

    resumed = small(vit(), epochs=3, checkpoint_every=1).fit(train, checkpoint_dir=tmp_path / "ck",
                                                               resume=True, progress=False)
    for k, v in ref.students_.state_dict().items():
        torch.testing.assert_close(resumed.students_.state_dict()[k], v, rtol=0, atol=0)
    assert resumed.loss_history_ == ref.loss_history_
    # a checkpoint of another configuration is refused, not silently continued
    with pytest.raises(ModelFileError, match="another l2bt configuration"):
        small(vit(), epochs=3, lr=5e-4).fit(train, checkpoint_dir=tmp_path / "ck", resume=True, progress=False)


def test_tiny_cache_budget_spills_to_disk_with_the_same_result(tmp_path):
    train = train_set(6)
    mem = small(vit(), epochs=2).fit(train, progress=False)
    anomalous = Sample(image=np.zeros((42, 70, 3), np.uint8), label=1)  # never trained on
    disk = small(vit(), epochs=2, cache_budget_mb=0.001, cache_dir=str(tmp_path / "spill")).fit(
        train + [anomalous], progress=False)
    assert mem.cache_stats_["spilled_images"] == 0 and disk.cache_stats_["images"] == 6
    assert disk.cache_stats_["spilled_images"] == 6
    for k, v in mem.students_.state_dict().items():
        torch.testing.assert_close(disk.students_.state_dict()[k], v, rtol=0, atol=0)


def test_auto_layers_keeps_the_pair_with_lowest_training_error():
    m = small(vit(), epochs=2, auto_layers=True, layer_candidates=[(1, 4), (2, 4), (3, 4)]).fit(
        train_set(4), progress=False)
    errs = {tuple(int(v) for v in k.split(",")): e for k, e in m.layer_errors_.items()}
    assert set(errs) == {(1, 4), (2, 4), (3, 4)}
    assert m.layers_ == min(errs, key=errs.get)


@pytest.mark.parametrize("grid", ["coarse", "fine"])
def test_cnn_teacher_variant(grid):
    c = cnn()
    j, k = c.num_layers - 2, c.num_layers - 1
    m = L2BT(teacher=c, image_size=64, epochs=2, batch_size=4, lr=1e-3, cnn_grid=grid).fit(
        train_set(4), progress=False)
    x, _ = m._preprocess().batch([texture(np.random.default_rng(0))])
    dj, dk = m.patch_deltas(x)
    cell = c.stride(k) if grid == "coarse" else c.stride(j)
    assert dj.shape == (1, 64 // cell, 64 // cell)
    assert m.students_["forward_student"][0].in_features == c.channels(j)
    assert m.students_["forward_student"][-1].out_features == c.channels(k)
    pred = m.predict([texture(np.random.default_rng(1), 40, 60)])
    assert pred.maps[0].shape == (40, 60)


def test_fusion_options_follow_table_9():
    train = train_set(4)
    maps = {}
    for f in ("product", "sum", "forward", "backward"):
        m = small(vit(), epochs=2, fusion=f, smoothing_sigma=0).fit(train, progress=False)
        maps[f] = m.predict([texture(np.random.default_rng(2), 56, 56)]).maps[0]
    # same seed, same students: the fused maps are the product / sum of the single directions
    np.testing.assert_allclose(maps["sum"], maps["forward"] + maps["backward"], rtol=1e-4, atol=1e-5)
    assert not np.allclose(maps["product"], maps["sum"])
    with pytest.raises(ValueError, match="fusion"):
        small(vit(), fusion="max").fit(train, progress=False)


def test_normalised_l2_and_top_mean():
    a = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    assert normalised_l2(a * 7, a).tolist() == pytest.approx([0.0, 0.0], abs=1e-6)
    assert normalised_l2(-a, a).tolist() == pytest.approx([2.0, 2.0])
    amap = np.arange(2000, dtype=np.float32).reshape(40, 50)
    assert top_mean(amap, 0.001) == pytest.approx(1998.5)  # M = 2 pixels: 1998, 1999
    assert top_mean(amap[:10, :10], 0.001) == pytest.approx(459.0)  # at least one pixel (the max)
