"""dual_student / dinomaly: shapes, the Noisy-OR objective and its gradient (eq. 3), hard mining,
the StableAdamW update clipping, multi-class training, save -> load. Tiny random teachers only."""
import math

import numpy as np
import pytest
import torch

from distillad.data import Sample, Split
from distillad.models.base import create_model, load
from distillad.models.dual_student import (DinomalyDecoder, StableAdamW, global_cosine_distance,
                                           make_layout, noisy_or_bce, noisy_or_normal_prob,
                                           teacher_features, warm_cosine_lr)
from distillad.models.dual_student.features import tokens_to_map, vit_final_norm
from distillad.models.dual_student.objectives import (cls_distance, hard_mining_p, hard_mining_threshold,
                                                      point_distances, single_bce)
from distillad.teachers import create

torch.set_num_threads(1)

VIT = dict(image_size=56, resize=70)
CNN = dict(image_size=64, resize=72)


def _images(n, seed=0, hw=(60, 70)):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (*hw, 3), dtype=np.uint8) for _ in range(n)]


def _train(n=6, seed=0, category=""):
    return [Sample(im, category=category) for im in _images(n, seed)]


def _model(teacher_name, **kw):
    t = create(teacher_name, weights="random")
    size = VIT if teacher_name == "test_vit_tiny" else CNN
    params = dict(teacher=t, iterations=3, batch_size=4, **size)
    params.update(kw)
    return create_model(kw.pop("model", "dual_student"), **{k: v for k, v in params.items() if k != "model"})


# ---------------------------------------------------------------- shapes
@pytest.mark.parametrize("teacher_name", ["test_vit_tiny", "test_cnn_tiny"])
def test_student_shapes_match_teacher_targets(teacher_name):
    t = create(teacher_name, weights="random")
    lay = make_layout(t, None, 2, encoder=True, final_norm=True)
    x = torch.randn(2, 3, 56, 56)
    f = teacher_features(t, lay, x)
    fuse = "mean" if t.kind == "vit" else "concat"
    dec = DinomalyDecoder(lay.group_dims, [len(g) for g in lay.groups], depth=8, num_heads=1, dropout=0.2, fuse=fuse)
    preds = dec(f["groups"])
    assert len(preds) == len(f["groups"]) == 2
    for p, g, c in zip(preds, f["groups"], lay.group_dims):
        assert p.shape == g.shape and g.shape[-1] == c
        assert tokens_to_map(p, lay.prefix, f["grid"]).shape == (2, c, *f["grid"])
    if t.kind == "vit":
        assert f["grid"] == (4, 4) and lay.prefix == t.num_prefix_tokens
        assert len(lay.cls_splits) == t.num_layers + 1   # every block + the final (normed) CLS
    else:
        assert len(lay.cls_splits) == t.num_layers       # every stage's pooled vector
    assert f["cls"].shape == (2, sum(lay.cls_splits))


def test_vit_final_norm_cls_equals_teachers_final_norm_output():
    t = create("test_vit_tiny", weights="random")
    x = torch.randn(2, 3, 56, 56)
    raw = t(x, [t.num_layers]).globals[t.num_layers]
    normed = t(x, [t.num_layers], final_norm=True).globals[t.num_layers]
    assert not torch.allclose(raw, normed)
    torch.testing.assert_close(vit_final_norm(t, raw), normed)


@pytest.mark.parametrize("teacher_name", ["test_vit_tiny", "test_cnn_tiny"])
@pytest.mark.parametrize("students", ["both", "decoder", "encoder"])
def test_fit_predict_maps_on_original_geometry(teacher_name, students):
    m = _model(teacher_name, students=students)
    m.fit(_train(5), progress=False)
    imgs = _images(3, seed=1, hw=(50, 81))
    pred = m.predict(imgs)
    assert pred.scores.shape == (3,) and np.isfinite(pred.scores).all()
    assert all(mp.shape == (50, 81) and mp.dtype == np.float32 for mp in pred.maps)
    assert m.threshold_ is not None
    if students == "both":  # the score is log AC(x) = log(sigmoid(L'_E) sigmoid(L_D)) in (log 0.25, 0]
        assert (pred.scores <= 0).all() and (pred.scores >= math.log(0.25) - 1e-9).all()


def test_encoder_student_is_trainable_copy_of_architecture_not_of_weights():
    m = _model("test_vit_tiny", students="encoder")
    m.fit(_train(4), progress=False)
    enc = m.students_.encoder.net
    assert type(enc.model) is type(m.teacher_.model)
    ps = dict(enc.named_parameters())
    assert set(ps) == set(dict(m.teacher_.named_parameters()))
    assert all(p.requires_grad for p in ps.values())
    assert not all(torch.equal(ps[k], v) for k, v in m.teacher_.named_parameters())
    assert not any(p.requires_grad for p in m.teacher_.parameters())


# ---------------------------------------------------------------- Noisy-OR (section 3.4)
def test_noisy_or_probability_and_bce_values():
    le = torch.tensor([0.0, 0.5, 3.0, 40.0], dtype=torch.float64)
    ld = torch.tensor([0.0, 2.0, 0.1, 50.0], dtype=torch.float64)
    p = 1 - (torch.exp(le) / (1 + torch.exp(le))) * (torch.exp(ld) / (1 + torch.exp(ld)))
    torch.testing.assert_close(noisy_or_normal_prob(le, ld), p)
    y = torch.tensor([1.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    # P = 1 - (1 - u)(1 - v) = u + v - uv with u = P_SE, v = P_SD: exact even when P ~ 1e-17
    u, v = torch.sigmoid(-le), torch.sigmoid(-ld)
    p_exact = u + v - u * v
    expect = -(y * torch.log(p_exact) + (1 - y) * torch.log(1 - p_exact)).mean()
    got = noisy_or_bce(le, ld, y)
    assert torch.isfinite(got)
    torch.testing.assert_close(got, expect, rtol=1e-6, atol=1e-6)


def test_noisy_or_gradient_matches_eq3_and_autograd():
    torch.manual_seed(0)
    theta_e = torch.randn(5, dtype=torch.float64, requires_grad=True)
    theta_d = torch.randn(5, dtype=torch.float64, requires_grad=True)
    # per-sample losses as smooth functions of "student parameters"
    l_e = theta_e.pow(2) + 0.3
    l_d = (theta_d - 0.5).pow(2)
    y = torch.ones(5, dtype=torch.float64)
    loss = noisy_or_bce(l_e, l_d, y) * 5  # sum over samples of -log P(x_i)
    g_auto, = torch.autograd.grad(loss, theta_e, retain_graph=True)
    with torch.no_grad():
        p_se = 1 / (1 + torch.exp(l_e))          # P_SE(x)
        p_sd = 1 / (1 + torch.exp(l_d))          # P_SD(x)
        p = noisy_or_normal_prob(l_e, l_d)       # P(x)
        dpse_dtheta = -p_se * (1 - p_se) * 2 * theta_e   # dP_SE/dL_SE * dL_SE/dtheta
        g_eq3 = -(1 - p_sd) / p * dpse_dtheta
    torch.testing.assert_close(g_auto, g_eq3)
    # a decoder student confident that x is normal (P_SD -> 1) shrinks the encoder's gradient
    small = noisy_or_bce(l_e.detach().requires_grad_(), torch.zeros(5, dtype=torch.float64) - 8, y)
    big = noisy_or_bce(l_e.detach().requires_grad_(), torch.zeros(5, dtype=torch.float64) + 8, y)
    assert small.item() < big.item()
    assert torch.autograd.gradcheck(lambda a, b: noisy_or_bce(a, b, y), (l_e.detach().requires_grad_(),
                                                                         l_d.detach().requires_grad_()))


def test_supervised_bce_uses_label_zero_for_anomalies():
    le, ld = torch.tensor([0.7]), torch.tensor([1.3])
    p = noisy_or_normal_prob(le, ld)
    torch.testing.assert_close(noisy_or_bce(le, ld, torch.tensor([0.0])), -torch.log(1 - p).mean())
    torch.testing.assert_close(single_bce(le, torch.tensor([0.0])), -torch.log(torch.sigmoid(le)).mean())


# ---------------------------------------------------------------- hard mining (Dinomaly)
def test_hard_mining_scales_gradient_only_at_easy_points():
    torch.manual_seed(0)
    t = torch.randn(2, 6, 5, 5)
    s = torch.randn(2, 6, 5, 5, requires_grad=True)
    plain, = torch.autograd.grad(global_cosine_distance([t], [s]).sum(), s)
    mined_loss = global_cosine_distance([t], [s], p=0.6)
    torch.testing.assert_close(mined_loss, global_cosine_distance([t], [s]))  # value unchanged
    mined, = torch.autograd.grad(mined_loss.sum(), s)
    d = point_distances(t, s.detach())
    thr = hard_mining_threshold(d, 0.6)
    easy = (d < thr)
    assert easy.sum() == d.numel() - int(d.numel() * 0.4)   # the top 40 % are the hard points
    ratio = mined / plain
    easy_c = easy.unsqueeze(1).expand_as(s)
    torch.testing.assert_close(ratio[easy_c], torch.full_like(ratio[easy_c], 0.1))
    torch.testing.assert_close(ratio[~easy_c], torch.ones_like(ratio[~easy_c]))


def test_hard_mining_schedule():
    assert hard_mining_p(0) == 0 and hard_mining_p(500) == pytest.approx(0.45)
    assert hard_mining_p(1000) == pytest.approx(0.9) and hard_mining_p(10**6) == pytest.approx(0.9)


# ---------------------------------------------------------------- optimiser and schedule
def test_stable_adamw_without_clipping_is_torch_adamw_amsgrad():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(10))
    b = torch.nn.Parameter(a.detach().clone())
    o1 = StableAdamW([a], lr=1e-2, weight_decay=1e-2, eps=1e-8, clip=False)
    o2 = torch.optim.AdamW([b], lr=1e-2, weight_decay=1e-2, eps=1e-8, amsgrad=True)
    for step in range(20):
        g = torch.randn(10) * (1 + step)
        a.grad, b.grad = g.clone(), g.clone()
        o1.step()
        o2.step()
    torch.testing.assert_close(a, b)


def test_stable_adamw_update_clipping_bounds_a_step():
    def run(clip):
        p = torch.nn.Parameter(torch.zeros(100))
        opt = StableAdamW([p], lr=1e-3, weight_decay=0.0, clip=clip)
        for _ in range(3000):            # a long history of small gradients ...
            p.grad = torch.full_like(p, 1e-3)
            opt.step()
        before = p.detach().clone()
        p.grad = torch.full_like(p, 1e3)  # ... then one huge gradient
        opt.step()
        return (p.detach() - before).abs().max().item()

    unclipped, clipped = run(False), run(True)
    assert unclipped > 2e-3              # Adam alone: a step of several learning rates
    assert clipped <= 1e-3               # update clipping: at most one learning rate


def test_warm_cosine_schedule():
    lrs = [warm_cosine_lr(i, 1000, 2e-3, 2e-4, 100) for i in range(1000)]
    assert lrs[0] == 0 and lrs[99] == pytest.approx(2e-3) and lrs[100] == pytest.approx(2e-3)
    assert lrs[-1] == pytest.approx(2e-4, rel=1e-3)
    assert all(a >= b - 1e-15 for a, b in zip(lrs[100:], lrs[101:]))


def test_cls_distance_mse_and_sse():
    t = torch.tensor([[1.0, 2.0, 0.0, 0.0, 0.0]])
    s = torch.zeros(1, 5)
    assert cls_distance(t, s, [2, 3], "sse").item() == pytest.approx((5 + 0) / 2)
    assert cls_distance(t, s, [2, 3], "mse").item() == pytest.approx((2.5 + 0) / 2)
    assert cls_distance(t, s, [2, 3], "mse", select=[0]).item() == pytest.approx(2.5)


# ---------------------------------------------------------------- settings
def test_multiclass_training_reports_both_categories():
    from distillad.data import multiclass
    from distillad.evaluate import evaluate

    def split(cat, seed):
        normal = _train(4, seed, cat)
        test = [Sample(im, category=cat) for im in _images(2, seed + 10)]
        bad = []
        for im in _images(2, seed + 20):
            im = im.copy()
            im[10:30, 10:30] = 255
            mask = np.zeros(im.shape[:2], bool)
            mask[10:30, 10:30] = True
            bad.append(Sample(im, label=1, mask=mask, defect_type="white", category=cat))
        return Split(cat, normal, test + bad)

    mc = multiclass([split("alpha", 0), split("beta", 1)])
    m = _model("test_vit_tiny")
    m.fit(mc.train, progress=False)
    res = evaluate(m, mc, speed=False, report=False, progress=False)
    per = res["per_category"]
    assert set(per) >= {"alpha", "beta", "mean"}
    for cat in ("alpha", "beta"):
        assert 0.0 <= per[cat]["image_auroc"] <= 1.0
        assert per[cat]["pixel_auroc"] is not None


def test_few_shot_one_image_fills_batches():
    m = _model("test_cnn_tiny", batch_size=4)
    m.fit(_train(1), progress=False)
    assert np.isfinite(m.predict(_images(2)).scores).all()


def test_unsupervised_ignores_anomalous_training_images():
    train = _train(3) + [Sample(_images(1, 5)[0], label=1, mask=None, defect_type="x")]
    m = _model("test_cnn_tiny", students="encoder")
    m.fit(train, progress=False)      # must not fail on the label-1 sample
    assert m.fit_info_["n_train"] == 4
    ms = _model("test_cnn_tiny", supervised=True)
    ms.fit(train, progress=False)


def test_bad_parameters_are_rejected():
    with pytest.raises(ValueError, match="students"):
        _model("test_cnn_tiny", students="three").fit(_train(2), progress=False)
    with pytest.raises(ValueError, match="multiple of 14"):
        _model("test_vit_tiny", image_size=50, resize=60).fit(_train(2), progress=False)
    with pytest.raises(ValueError, match="noisy_or"):
        _model("test_cnn_tiny", supervised=True, fusion="sum").fit(_train(2), progress=False)


# ---------------------------------------------------------------- persistence
@pytest.mark.parametrize("teacher_name,kw", [("test_vit_tiny", {}),
                                             ("test_cnn_tiny", {"fusion": "sum", "encoder_score": "all_cls"})])
def test_save_load_gives_identical_scores(tmp_path, teacher_name, kw):
    m = _model(teacher_name, **kw)
    m.fit(_train(4), progress=False)
    imgs = _images(3, seed=3)
    a = m.predict(imgs)
    m.save(tmp_path / "m")
    m2 = load(tmp_path / "m")
    b = m2.predict(imgs)
    np.testing.assert_array_equal(a.scores, b.scores)
    for x, y in zip(a.maps, b.maps):
        np.testing.assert_array_equal(x, y)
    assert m2.get_params() == {**m.get_params(), "teacher": m2.teacher}


def test_dinomaly_is_the_decoder_student_alone(tmp_path):
    t = create("test_vit_tiny", weights="random")
    m = create_model("dinomaly", teacher=t, iterations=2, batch_size=2, **VIT)
    m.fit(_train(3), progress=False)
    assert m.students_.encoder is None and m.students_.decoder is not None
    assert m.decoder_score == "map_top1"
    m.save(tmp_path / "d")
    assert type(load(tmp_path / "d")).__name__ == "Dinomaly"


@pytest.mark.parametrize("teacher_name", ["test_vit_tiny", "test_cnn_tiny"])
def test_encoder_student_gets_gradients_and_matches_teacher_semantics(teacher_name):
    from distillad.models.dual_student import EncoderStudent

    t = create(teacher_name, weights="random")
    lay = make_layout(t, None, 2, encoder=True, final_norm=True)
    st = EncoderStudent(create(teacher_name, weights="random"), lay.cls_levels, lay.cls_final_norm)
    x = torch.randn(2, 3, 56, 56)
    out = st(x)
    # with the teacher's own weights the student reproduces the teacher's targets exactly
    torch.testing.assert_close(out, teacher_features(t, lay, x, groups=False)["cls"])
    out.sum().backward()
    assert all(p.grad is not None for p in st.parameters() if p.requires_grad)


def test_training_never_recomputes_teacher_features():
    calls = {}
    for iters in (1, 5):
        t = create("test_cnn_tiny", weights="random")
        n = [0]
        t.register_forward_hook(lambda *a: n.__setitem__(0, n[0] + 1))
        m = _model("test_cnn_tiny", iterations=iters)
        m.teacher = t
        m.fit(_train(5), progress=False)
        calls[iters] = n[0]
    assert calls[1] == calls[5]      # caching + calibration only, whatever the iteration count


def test_feature_cache_over_budget_spills_to_disk_with_same_result():
    a = _model("test_vit_tiny", cache_budget_mb=1024).fit(_train(4), progress=False)
    b = _model("test_vit_tiny", cache_budget_mb=0).fit(_train(4), progress=False)
    imgs = _images(2, seed=9)
    np.testing.assert_allclose(a.predict(imgs).scores, b.predict(imgs).scores, rtol=1e-6)


def test_only_parameters_that_shape_the_outputs_are_trained():
    m = _model("test_vit_tiny", encoder_final_norm=False)
    m.fit(_train(4), progress=False)
    frozen = [k for k, p in m.students_.named_parameters() if not p.requires_grad]
    assert frozen and all(k.startswith("encoder.net.model.norm.") for k in frozen)
