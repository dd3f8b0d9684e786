"""HKT / HKT+ (004_f53e0b7a727d9625.txt): student shapes, CBAM, projectors, training, maps, persistence.

Everything runs on tiny random PDN teachers (width 1/8, 16 output channels) at 96 px.
"""
import numpy as np
import pytest
import torch

import distillad
from distillad import teachers
from distillad.errors import NotFittedError
from distillad.models.hkt import CBAM, HKT, HKTStudent, hkt_loss

torch.set_num_threads(1)

SIZE = 96  # -> 16 x 16 output grid


def _meta_forward(student, size=256):
    student = student.to("meta")
    return student(torch.empty(1, 3, size, size, device="meta"))


@pytest.mark.parametrize("variant", ["hkt", "hkt+"])
def test_student_shapes_at_paper_size(variant):
    out, proj = _meta_forward(HKTStudent(variant))
    assert tuple(out.shape) == (1, 384, 56, 56)  # the PDN teacher's output grid at 256 px
    assert len(proj) == 3 and all(tuple(p.shape) == (1, 384, 56, 56) for p in proj)
    out, proj = _meta_forward(HKTStudent(variant, projectors=False))
    assert proj == []


def test_hkt_plus_is_the_deeper_wider_variant():
    small, big = HKTStudent("hkt", projectors=False), HKTStudent("hkt+", projectors=False)
    n_small = sum(1 for s in small.stages for c in s if isinstance(c, torch.nn.Conv2d))
    n_big = sum(1 for s in big.stages for c in s if isinstance(c, torch.nn.Conv2d))
    assert n_big == n_small + 2  # section 2.2: two more conv layers
    assert big.stages[0][0].out_channels == 2 * small.stages[0][0].out_channels  # hidden widths doubled
    assert big.stages[2][1].kernel_size == (1, 1)  # 1x1 conv after the second pooling layer
    assert big.stages[3][-1].kernel_size == (1, 1)  # ... and after the last conv
    # the paper's sizes (Table 5/6): ~2.7 M and ~8.1 M parameters without projectors
    assert 2.6e6 < sum(p.numel() for p in small.parameters()) < 2.8e6
    assert 7.9e6 < sum(p.numel() for p in big.parameters()) < 8.2e6


def test_cbam_is_channel_times_spatial_attention():
    torch.manual_seed(0)
    cbam = CBAM(32)
    x = torch.rand(2, 32, 12, 12) + 0.1
    y = cbam(x)
    assert y.shape == x.shape and not torch.allclose(y, x)
    r = y / x  # = Mc[c] * Ms[h, w] with both in (0, 1): a rank-1 (channel x position) gain per image
    assert (r > 0).all() and (r < 1).all()
    for b in range(2):
        m = r[b].reshape(32, -1).double()
        s = torch.linalg.svdvals(m)
        assert s[1] / s[0] < 1e-5
    # the spatial part responds to where the input is strong
    x2 = x.clone()
    x2[:, :, 3:6, 3:6] += 5.0
    y2 = cbam(x2)
    gain = (y2 / x2)[0].mean(0)
    assert not torch.allclose(gain[4, 4], gain[10, 10])


def test_cbam_sits_after_stages_1_to_3_only():
    s = HKTStudent("hkt")
    assert [isinstance(stage[-1], CBAM) for stage in s.stages] == [True, True, True, False]
    s = HKTStudent("hkt", cbam=False)
    assert not any(isinstance(m, CBAM) for m in s.modules())


def test_projectors_are_1x1_conv_then_nearest_resampling():
    torch.manual_seed(0)
    s = HKTStudent("hkt", width=0.125, out_channels=16).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    feats = []
    h = x
    for stage in s.stages:
        h = stage(h)
        feats.append(h)
    out, proj = s(x)
    assert torch.allclose(out, feats[-1])
    g = out.shape[-1]
    for p, f, conv in zip(proj, feats[:3], s.projectors):
        assert conv.kernel_size == (1, 1) and conv.out_channels == 16
        full = conv(f)
        idx = (torch.arange(g) * f.shape[-1] / g).floor().long()  # nearest: floor(i * in / out)
        assert torch.allclose(p, full[:, :, idx][:, :, :, idx], atol=1e-6)
        assert not torch.allclose(p, out)


def test_projection_loss_reaches_every_stage_and_lambda_weights_it():
    torch.manual_seed(0)
    s = HKTStudent("hkt", width=0.125, out_channels=16)
    x = torch.randn(1, 3, SIZE, SIZE)
    t = torch.randn(1, 16, 16, 16)
    out, proj = s(x)
    l4 = torch.nn.functional.mse_loss(out, t)
    lp = torch.stack([torch.nn.functional.mse_loss(p, t) for p in proj]).mean()
    assert torch.allclose(hkt_loss(t, out, proj, 0.5), l4 + 0.5 * lp)
    hkt_loss(t, out, proj, 0.0).backward()
    assert all(p.grad is None for p in s.projectors.parameters())
    s.zero_grad()
    out, proj = s(x)
    hkt_loss(t, out, proj, 0.5).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in s.projectors.parameters())


# ------------------------------------------------------------------ detector on synthetic data
def _texture(rng, size=SIZE):
    """Normal images: diagonal stripes with a random phase plus a little noise."""
    yy, xx = np.mgrid[:size, :size]
    phase = rng.uniform(0, 2 * np.pi)
    v = 0.5 + 0.3 * np.sin((xx + yy) * 0.4 + phase) + rng.normal(0, 0.02, (size, size))
    img = np.stack([v, 0.8 * v, 0.6 * v], -1)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _normals(n, seed):
    rng = np.random.default_rng(seed)
    return [_texture(rng) for _ in range(n)]


def _teacher(variant="s"):
    return teachers.create(f"pdn_{variant}", weights="random", width=0.125, out_channels=16)


def _model(variant="hkt", **kw):
    cfg = dict(teacher=_teacher("m" if variant == "hkt+" else "s"), variant=variant, image_size=SIZE,
               iterations=60, width=0.125, lr=1e-3, checkpoint_every=1000)
    cfg.update(kw)
    return HKT(**cfg)


def _samples(arrays):
    from distillad.data.samples import Sample
    return [Sample(a, 0) for a in arrays]


@pytest.fixture(scope="module")
def fitted():
    return _model().fit(_samples(_normals(8, 0)), progress=False)


def test_registry_and_variants():
    m = distillad.create_model("hkt", variant="hkt+", teacher=_teacher("m"))
    assert isinstance(m, HKT) and m.variant == "hkt+"
    with pytest.raises(NotFittedError):
        m.predict(_normals(1, 0))
    with pytest.raises(ValueError, match="variant"):
        HKT(variant="hkt++", teacher=_teacher()).fit(_samples(_normals(2, 0)), progress=False)
    with pytest.raises(ValueError, match="PDN"):
        HKT(teacher=teachers.create("test_cnn_tiny", weights="random"), image_size=SIZE).fit(
            _samples(_normals(2, 0)), progress=False)


def test_student_learns_on_a_synthetic_set(fitted):
    losses = fitted.losses_
    assert len(losses) == 60
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:5])


def test_predictions_are_on_the_original_geometry(fitted):
    imgs = [_texture(np.random.default_rng(1), 130)[:, :111], _texture(np.random.default_rng(2), 80)]
    pred = fitted.predict(imgs)
    assert [m.shape for m in pred.maps] == [(130, 111), (80, 80)]
    assert pred.scores.shape == (2,) and np.allclose(pred.scores, [m.max() for m in pred.maps], rtol=0.05)
    assert fitted.threshold_ is not None


def test_planted_defect_raises_the_map_at_its_place(fitted):
    rng = np.random.default_rng(5)
    img = _texture(rng)
    bad = img.copy()
    bad[40:60, 40:60] = [30, 200, 40]  # a green square where only brown stripes were seen
    pred = fitted.predict([img, bad])
    m = pred.maps[1]
    inside = m[42:58, 42:58].mean()
    outside = np.concatenate([m[:25].ravel(), m[75:].ravel()]).mean()
    assert inside > 2 * outside
    assert pred.scores[1] > pred.scores[0]
    assert m[42:58, 42:58].mean() > pred.maps[0][42:58, 42:58].mean()


def test_save_load_gives_identical_maps(fitted, tmp_path):
    imgs = _normals(2, 9)
    before = fitted.predict(imgs)
    fitted.save(tmp_path / "m")
    loaded = distillad.load(tmp_path / "m")
    after = loaded.predict(imgs)
    assert isinstance(loaded, HKT) and loaded.variant == "hkt"
    np.testing.assert_array_equal(before.scores, after.scores)
    for a, b in zip(before.maps, after.maps):
        np.testing.assert_array_equal(a, b)
    assert loaded.threshold_ == fitted.threshold_


def test_training_resumes_on_the_same_loss_curve(tmp_path):
    data = _samples(_normals(3, 3))
    straight = _model(iterations=6).fit(data, progress=False)
    _model(iterations=3, checkpoint_every=3).fit(data, checkpoint_dir=tmp_path, progress=False)
    resumed = _model(iterations=6, checkpoint_every=3).fit(data, checkpoint_dir=tmp_path, resume=True, progress=False)
    assert resumed.losses_ == straight.losses_
    x = _normals(1, 4)
    np.testing.assert_array_equal(straight.predict(x).maps[0], resumed.predict(x).maps[0])


def test_hkt_plus_fits_saves_and_map_fusion_option(tmp_path):
    data = _samples(_normals(3, 6))
    m = distillad.create_model("hkt+", teacher=_teacher("m"), image_size=SIZE, iterations=3, width=0.125,
                               map_fusion="loss")
    assert m.get_params()["variant"] == "hkt+"  # `hkt+` = hkt with variant "hkt+" (for `bench --models hkt,hkt+`)
    m.fit(data, progress=False)
    p = m.predict(_normals(1, 7))
    assert p.maps[0].shape == (SIZE, SIZE) and np.isfinite(p.maps[0]).all()
    # the loss-form fusion adds the projected stages' differences on top of the final one
    x = torch.randn(1, 3, SIZE, SIZE)
    fused = m.anomaly_maps(x)
    m.map_fusion = "final"
    final = m.anomaly_maps(x)
    t = m._teacher_out(x)
    _, proj = m.student_(x)
    extra = torch.stack([((t - q) ** 2).mean(1) for q in proj]).mean(0)
    assert torch.allclose(fused, final + 0.5 * extra, rtol=1e-5) and (fused > final).all()
    m.map_fusion = "loss"
    c = m.complexity()
    assert c["flops_inference"] > 0 and c["params_student"] > c["params_projectors"] > 0
    loaded = distillad.load(m.save(tmp_path / "plus"))
    assert type(loaded).name == "hkt+" and loaded.variant == "hkt+"


def test_complexity_counts_paper_scale_flops():
    m = HKT(teacher=teachers.create("pdn_s", weights="random"))
    m.teacher_ = m.teacher.freeze()
    m.student_ = HKTStudent("hkt")
    c = m.complexity()
    # one PDN-S at 256 px is ~15.3 G multiply-adds (the paper's Table 5: 15.31 "GFLOPs")
    assert c["flops_teacher"] / 2e9 == pytest.approx(15.3, rel=0.02)
    assert c["gmacs_inference"] == pytest.approx((c["flops_teacher"] + c["flops_student"]) / 2e9, rel=1e-3)
