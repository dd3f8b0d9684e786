"""OneN: token layout, rollout (hand-computed), PMFL retention (eq. 5), background synthesis,
input settings, training moves attention onto a planted defect, save/load round trip."""
import math

import numpy as np
import pytest
import torch

import distillad
from distillad.data import Sample, Split
from distillad.models.onen import (Augment, DistilledViT, attention_rollout, input_setting, mask_to_boxes,
                                   retention_probabilities, synthesize_background, weak_boxes)
from distillad.models.onen.pmfl import focal_loss, patch_targets, pmfl_loss, retention_masks

torch.set_num_threads(1)


# ---------------------------------------------------------------- student ViT
def test_token_layout_cls_dist_patches():
    vit = DistilledViT(3, depth=2, img_size=32, patch_size=8, embed_dim=16, num_heads=2)
    assert vit.pos_embed.shape == (1, 16 + 2, 16)          # N + 2 positions
    x = torch.randn(2, 3, 32, 32)
    cls, dist, attns = vit(x)
    assert cls.shape == dist.shape == (2, 3)
    assert len(attns) == 2 and attns[0].shape == (2, 2, 18, 18)
    assert torch.allclose(attns[0].sum(-1), torch.ones(2, 2, 18), atol=1e-5)   # softmax rows
    # two separate heads: zeroing the DIST head leaves the CLS logits intact
    with torch.no_grad():
        vit.head_dist.weight.zero_()
        vit.head_dist.bias.zero_()
    cls2, dist2, _ = vit(x)
    assert torch.allclose(cls2, cls) and torch.count_nonzero(dist2) == 0
    assert torch.allclose(DistilledViT.inference_logits(cls2, dist2), cls2 / 2)
    plain = DistilledViT(3, depth=1, img_size=32, patch_size=8, embed_dim=16, num_heads=2, distill_token=False)
    assert plain.pos_embed.shape == (1, 17, 16) and plain(x)[1] is None


def test_student_initialises_from_a_vit_checkpoint(tmp_path):
    from safetensors.torch import save_file
    src = DistilledViT(3, depth=3, img_size=32, patch_size=8, embed_dim=16, num_heads=2, distill_token=False)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "vit.safetensors"))
    dst = DistilledViT(5, depth=2, img_size=48, patch_size=8, embed_dim=16, num_heads=2)
    missing = dst.load_pretrained(tmp_path / "vit.safetensors")
    assert torch.equal(dst.blocks[1].attn.qkv.weight, src.blocks[1].attn.qkv.weight)
    assert torch.equal(dst.dist_token, src.cls_token)                   # DIST from CLS
    assert dst.pos_embed.shape == (1, 36 + 2, 16)                       # resampled 4x4 -> 6x6
    assert all(k.startswith(("head", "head_dist")) for k in missing)


# ---------------------------------------------------------------- rollout
def _attn(*heads):
    return torch.tensor([heads], dtype=torch.float64)  # 1 x heads x T x T


def test_rollout_one_layer_by_hand_with_keepdim_normalisation():
    # tokens [CLS, DIST, P1]; two heads, fused by max
    h1 = [[.5, .25, .25], [.2, .6, .2], [.1, .1, .8]]
    h2 = [[.2, .2, .6], [.4, .4, .2], [.3, .3, .4]]
    # max: [[.5,.25,.6],[.4,.6,.2],[.3,.3,.8]]; 0.5 A + 0.5 I -> row 0 = [.75, .125, .3], sum 1.175
    m = attention_rollout([_attn(h1, h2)], num_prefix_tokens=2, alpha=0.5, discard_ratio=0.0)
    assert m.shape == (1, 1)
    assert m[0, 0].item() == pytest.approx(0.3 / 1.175)
    # the known bug (dividing by the row sums without keepdim) gives 0.3 / 1.2 here
    assert m[0, 0].item() != pytest.approx(0.3 / 1.2)


def test_rollout_discard_and_layer_order_by_hand():
    # one head, tokens [CLS, DIST, P1, P2]
    # (distinct values, so which 75 % are discarded does not depend on tie-breaking)
    a1 = [[.41, .09, .31, .19], [.11, .52, .21, .16], [.24, .26, .38, .12], [.13, .17, .27, .43]]
    a2 = [[.1, .15, .05, .7], [.32, .28, .22, .18], [.21, .19, .23, .37], [.5, .12, .08, .3]]
    # discard 75 % of 16 = 12 lowest values, CLS->CLS always kept
    m = attention_rollout([_attn(a1), _attn(a2)], num_prefix_tokens=2, alpha=0.5, discard_ratio=0.75)

    def layer(a):
        a = np.array(a)
        flat = a.flatten()
        low = np.argsort(flat, kind="stable")[:12]
        keep00 = flat[0]
        flat[low] = 0
        flat[0] = keep00
        t = 0.5 * flat.reshape(4, 4) + 0.5 * np.eye(4)
        return t / t.sum(axis=1, keepdims=True)

    expected = (layer(a2) @ layer(a1))[0, 2:]          # later layers on the left (Abnar & Zuidema)
    assert m.shape == (1, 2)
    np.testing.assert_allclose(m[0].numpy(), expected, rtol=1e-9)
    # by hand for a2 alone: .7 .5 .37 .32 survive, and CLS->CLS (.1); CLS row
    # [.1, 0, 0, .7] -> 0.5 A + 0.5 I = [.55, 0, 0, .35], sum .9
    m2 = attention_rollout([_attn(a2)], num_prefix_tokens=2, alpha=0.5, discard_ratio=0.75)
    np.testing.assert_allclose(m2[0].numpy(), [0.0, 0.35 / 0.9], rtol=1e-9)


def test_rollout_ignores_dist_column_for_plain_vit_layout():
    a = torch.softmax(torch.randn(2, 3, 5, 5, dtype=torch.float64), -1)
    with_dist = attention_rollout([a], num_prefix_tokens=2, discard_ratio=0.0)
    plain = attention_rollout([a], num_prefix_tokens=1, discard_ratio=0.0)
    assert with_dist.shape == (2, 3) and plain.shape == (2, 4)
    assert torch.allclose(plain[:, 1:], with_dist)


# ---------------------------------------------------------------- PMFL
def test_retention_probabilities_follow_eq5():
    assert retention_probabilities(3, 0.1, 1.0) == pytest.approx([0.4, 0.7, 1.0])
    assert retention_probabilities(12, 0.1, 1.0) == pytest.approx([0.1 + 0.9 * i / 12 for i in range(1, 13)])
    g = torch.Generator().manual_seed(0)
    keeps = retention_masks((64, 4096), 8, 0.2, 0.9, generator=g)
    for i, k in enumerate(keeps, start=1):
        assert k.float().mean().item() == pytest.approx(0.2 + 0.7 * i / 8, abs=0.01)


def test_focal_loss_values():
    p = torch.tensor([0.5, 0.9, 0.1])
    t = torch.tensor([1.0, 1.0, 0.0])
    expected = [-(0.5 ** 2) * math.log(0.5), -(0.1 ** 2) * math.log(0.9), -(0.1 ** 2) * math.log(0.9)]
    assert focal_loss(p, t).tolist() == pytest.approx(expected, rel=1e-5)


def test_pmfl_gradient_pushes_cls_attention_onto_defect_patches():
    logits = torch.zeros(1, 1, 6, 6, requires_grad=True)     # [CLS, DIST, 4 patches]
    targets = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    loss = pmfl_loss([logits.softmax(-1)], targets, num_prefix_tokens=2, p_min=1.0, p_max=1.0)
    loss.backward()
    g = logits.grad[0, 0, 0]                                   # CLS row
    assert g[3] < 0 and (g[[2, 4, 5]] > 0).all()              # descent raises patch 2 only
    m = torch.zeros(1, 8, 8)
    m[0, 0, 5] = 1                                             # one pixel marks its whole patch
    assert patch_targets(m, 2).tolist() == [[0.0, 1.0, 0.0, 0.0]]


# ---------------------------------------------------------------- data side
def test_background_keeps_borders_and_fills_centre():
    rng = np.random.default_rng(0)
    im = np.zeros((40, 60, 3), np.uint8)
    im[:, :9] = (200, 30, 30)
    im[:, -9:] = (30, 30, 200)
    im[:, 9:-9, 1] = rng.integers(150, 255, (40, 42))        # a green "object" in the centre
    out, region = synthesize_background(im, border=0.15)
    assert not region[:, :9].any() and not region[:, -9:].any() and region[:, 9:-9].all()
    assert np.array_equal(out[:, :9], im[:, :9]) and np.array_equal(out[:, -9:], im[:, -9:])
    centre = out[:, 9:-9].astype(int)
    assert centre[..., 1].max() < 100                           # the object is gone
    assert (centre[..., 0] + centre[..., 2]).min() > 150        # filled from the borders


def _cls_split():
    def s(cls, lab, i):
        im = np.full((16, 16, 3), 40 * i % 255, np.uint8)
        m = np.zeros((16, 16), bool)
        if lab:
            m[2:5, 3:7] = True
            m[10:12, 10:14] = True
        return Sample(im, lab, m if lab else None, ("good", "a", "b")[cls], "x", cls)
    train = [s(0, 0, i) for i in range(6)] + [s(1, 1, i) for i in range(3)] + [s(2, 1, i) for i in range(3)]
    return Split("toy", train, list(train), ("good", "a", "b"))


def test_input_settings_relabel_classes():
    split = _cls_split()
    b = input_setting(split, "B")
    assert b.class_names == ("good", "defective") and sorted({s.class_id for s in b.train}) == [0, 1]
    std = input_setting(split, "STD")
    assert std.class_names == ("a", "b") and all(s.label == 1 for s in std.train)
    bg = input_setting(split, "STD+G+BG", seed=0)
    assert bg.class_names == ("good", "a", "b", "background")
    bgs = [s for s in bg.train if s.defect_type == "background"]
    assert len(bgs) == 3 and all(s.class_id == 3 and s.label == 1 for s in bgs)
    assert bgs[0].load_mask()[:, 8].all() and not bgs[0].load_mask()[:, 0].any()


def test_weak_boxes_from_mask_components():
    split = _cls_split()
    assert mask_to_boxes(split.train[-1].load_mask()) == ((3, 2, 6, 4), (10, 10, 13, 11))
    weak = weak_boxes(split.train)
    assert weak[-1].mask is None and weak[-1].boxes == ((3, 2, 6, 4), (10, 10, 13, 11))
    assert weak[0] is split.train[0]


def test_augmented_crop_keeps_the_defect():
    rng = np.random.default_rng(0)
    aug = Augment(p=1.0, max_rotation=0.0, crop_min=0.5)
    im = np.zeros((32, 32, 3), np.uint8)
    m = np.zeros((32, 32), np.uint8)
    m[1:4, 27:31] = 1
    for _ in range(20):
        _, m2 = aug(im, m, rng)
        assert m2.sum() >= m.sum()          # never cropped away (only enlarged by the resize)


# ---------------------------------------------------------------- end to end
def _planted(n_norm, n_def, seed, size=32):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_norm + n_def):
        im = rng.normal(110, 12, (size, size, 3)).clip(0, 255).astype(np.uint8)
        if i < n_norm:
            out.append(Sample(im, 0, None, "good", "syn", 0))
            continue
        m = np.zeros((size, size), bool)
        y, x = rng.integers(0, size - 8, 2)
        m[y : y + 8, x : x + 8] = True
        im[m] = 250
        out.append(Sample(im, 1, m, "spot", "syn", 1))
    return out


TINY = dict(teacher="test_efficientnet", teacher_weights="random", image_size=32, patch_size=8, embed_dim=32,
            num_heads=2, batch_size=16, patience=35, seed=0)


def _inside_ratio(model, samples):
    """Share of the rollout mass on defect patches / share of the patches that are defective
    (1 = no preference), averaged over the defective samples."""
    d = [s for s in samples if s.label]
    maps = model.explain([s.load_image() for s in d])["rollout"]
    r = []
    for s, m in zip(d, maps):
        t = patch_targets(torch.from_numpy(s.load_mask()[None]).float(), m.shape[0])[0].numpy().astype(bool)
        m = m.flatten()
        r.append((m[t].sum() / max(m.sum(), 1e-12)) / t.mean())
    return float(np.mean(r))


@pytest.fixture(scope="module")
def trained():
    train = _planted(16, 16, seed=0)
    model = distillad.create_model("onen", **TINY, epochs=20, supervision="masks").fit(train, progress=False)
    return model, _planted(8, 8, seed=1)


def test_training_moves_attention_onto_the_planted_defect(trained):
    model, test = trained
    untrained = distillad.create_model("onen", **TINY, epochs=1, lr=0.0).fit(_planted(4, 4, seed=0), progress=False)
    before, after = _inside_ratio(untrained, test), _inside_ratio(model, test)
    assert after > 2.0 and after > 1.5 * before
    pred = model.predict([s.load_image() for s in test])
    assert (pred.labels == np.array([s.class_id for s in test])).mean() >= 0.9
    assert pred.probs.shape == (16, 2) and np.allclose(pred.probs.sum(1), 1, atol=1e-5)
    assert all(m.shape == (32, 32) for m in pred.maps)
    assert model.training_["teacher"]["mask_branch"] is True


def test_save_load_gives_identical_predictions(trained, tmp_path):
    model, test = trained
    images = [s.load_image() for s in test[:6]]
    model.save(tmp_path / "m")
    back = distillad.load(tmp_path / "m")
    p1, p2 = model.predict(images), back.predict(images)
    assert np.array_equal(p1.scores, p2.scores) and np.array_equal(p1.labels, p2.labels)
    assert np.array_equal(p1.probs, p2.probs)
    assert all(np.array_equal(a, b) for a, b in zip(p1.maps, p2.maps))
    assert back.teacher == "test_efficientnet" and back.normal_class_ == 0


def test_complexity_counts_the_student_as_table_3(trained):
    """OneN-S at the paper's size (DeiT-B width, 224 px, 6 classes): 22.02 M parameters as in
    table 3; FLOPs from torch's counter on meta tensors; the trained model reports its own."""
    from distillad.models.common import count_flops
    vit = DistilledViT(6, depth=3, img_size=224, patch_size=16, embed_dim=768, num_heads=12)
    assert round(sum(p.numel() for p in vit.parameters()) / 1e6, 2) == 22.02
    assert round(count_flops(vit, torch.empty(1, 3, 224, 224)) / 2e9, 2) == 4.50
    model, _ = trained
    c = model.complexity()
    assert c["params_student"] == sum(p.numel() for p in model.student_.parameters()) and c["params_teacher"] == 0
    assert c["flops_inference"] == count_flops(model.student_, torch.empty(1, 3, 32, 32)) > 0
    assert model.complexity(image_size=64)["flops_inference"] > 4 * c["flops_inference"]


def test_defect_prob_score_and_bad_params():
    train = _planted(6, 6, seed=2)
    m = distillad.create_model("onen", **TINY, epochs=2, supervision="none", score="defect_prob").fit(train, progress=False)
    p = m.predict([s.load_image() for s in train[:4]])
    assert np.allclose(p.scores, 1 - p.probs[:, 0], atol=1e-6)
    with pytest.raises(ValueError, match="variant"):
        distillad.create_model("onen", **TINY, variant="XL").fit(train, progress=False)
    with pytest.raises(ValueError, match="fit_test_aware"):
        distillad.create_model("onen", **TINY, protocol="t-aw").fit(train, progress=False)
    with pytest.raises(ValueError, match="at least two classes"):
        distillad.create_model("onen", **TINY).fit(train[:6], progress=False)


def test_test_aware_protocol_is_flagged():
    train, test = _planted(6, 6, seed=3), _planted(4, 4, seed=4)
    m = distillad.create_model("onen", **TINY, epochs=2, supervision="boxes", protocol="t-aw")
    m.fit_test_aware(weak_boxes(train), test, progress=False)
    assert "optimistic" in m.selection_ and "best_selection_accuracy" in m.training_["student"]


def test_baselines_vit_rollout_and_cnn_cam(tmp_path):
    train = _planted(6, 6, seed=5)
    images = [s.load_image() for s in train[:3]]
    vit = distillad.create_model("vit_rollout", image_size=32, patch_size=8, embed_dim=32, num_heads=2,
                                 batch_size=16, epochs=2).fit(train, progress=False)
    assert vit.student_.dist_token is None and vit.predict(images).maps[0].shape == (32, 32)
    cam = distillad.create_model("cnn_cam", teacher="test_efficientnet", teacher_weights="random", image_size=32,
                                 batch_size=16, epochs=2, cam="gradcam++").fit(train, progress=False)
    p = cam.predict(images)
    assert p.maps[0].shape == (32, 32) and p.labels.shape == (3,)
    assert cam.complexity()["params_student"] == sum(q.numel() for q in cam.model_.parameters())
    assert cam.complexity()["flops_inference"] > 0
    for kind in ("gradcam", "scorecam", "layercam"):        # the other CAMs of tables 6-14
        cam.cam = kind
        m = cam.predict(images[:1]).maps[0]
        assert m.shape == (32, 32) and np.isfinite(m).all()
    cam.cam = "gradcam++"
    cam.save(tmp_path / "cam")
    q = distillad.load(tmp_path / "cam").predict(images)
    assert np.array_equal(p.scores, q.scores) and all(np.allclose(a, b) for a, b in zip(p.maps, q.maps))
    # the trained CNN serves as OneN's teacher as it is
    onen = distillad.create_model("onen", **{**TINY, "teacher": str(tmp_path / "cam")}, epochs=1).fit(train, progress=False)
    assert "reused" in onen.training_["teacher"]["trained"]
    with pytest.raises(distillad.errors.ModelFileError, match="must hold a saved cnn_cam"):
        onen.save(tmp_path / "onen")
        distillad.create_model("onen", **{**TINY, "teacher": str(tmp_path / "onen")}, epochs=1).fit(train, progress=False)
