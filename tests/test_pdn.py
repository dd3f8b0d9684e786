"""PDN teachers (EfficientAD's Patch Description Network) and their pretraining."""
import json

import numpy as np
import pytest
import torch

from distillad import teachers
from distillad.errors import WeightsNotFoundError
from distillad.teachers.pdn import PDNTeacher, build_pdn, channel_stats, pretrain_pdn

torch.set_num_threads(1)


def _meta_out(net, size):
    net = net.to("meta")
    return net(torch.empty(1, 3, size, size, device="meta")).shape


@pytest.mark.parametrize("variant, params", [("s", 2_694_144), ("m", 8_026_624)])
def test_pdn_shapes_and_size_match_the_paper(variant, params):
    # METHODS.md: without padding a 256 input gives 56 x 56 x 384; padded (pretraining) 64 x 64
    assert tuple(_meta_out(build_pdn(variant), 256)) == (1, 384, 56, 56)
    assert tuple(_meta_out(build_pdn(variant, padding=True), 256)) == (1, 384, 64, 64)
    # the paper's Table 5: HKT 2.69 M, HKT+ 8.02 M parameters (one PDN-S / PDN-M)
    assert sum(p.numel() for p in build_pdn(variant).parameters()) == params


def test_registry_names_and_missing_weights_message(monkeypatch):
    monkeypatch.delenv("DISTILLAD_WEIGHTS", raising=False)
    names = {r["name"]: r for r in teachers.available()}
    assert names["pdn_s"]["kind"] == "pdn" and names["pdn_m"]["kind"] == "pdn"
    with pytest.raises(WeightsNotFoundError, match="pretrain-pdn"):
        teachers.create("pdn_s")
    t = teachers.create("pdn_m", weights="random", width=0.125, out_channels=16)
    assert (t.name, t.kind, t.num_layers, t.channels(1), t.stride(1)) == ("pdn_m", "pdn", 1, 16, 4)
    f = t(torch.randn(2, 3, 64, 64), [1])
    assert f.maps[1].shape == (2, 16, 8, 8) and f.globals[1].shape == (2, 16)
    assert not any(p.requires_grad for p in t.parameters())


def test_output_standardisation_buffers_apply():
    t = PDNTeacher("s", width=0.125, out_channels=8).freeze()
    x = torch.randn(1, 3, 64, 64)
    raw = t.net(x)
    t.out_mean.fill_(2.0)
    t.out_std.fill_(4.0)
    assert torch.allclose(t(x, [1]).maps[1], (raw - 2.0) / 4.0)


def test_channel_stats():
    g = torch.Generator().manual_seed(0)
    ys = [torch.randn(2, 3, 5, 5, generator=g) * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1) + 5 for _ in range(20)]
    m, s = channel_stats(ys)
    allv = torch.cat(ys).permute(1, 0, 2, 3).reshape(3, -1)
    assert torch.allclose(m.flatten(), allv.mean(1), atol=1e-5)
    assert torch.allclose(s.flatten(), allv.std(1), atol=1e-4)


def _images(n=5, size=96, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def _pretrain(tmp_path, name, steps, resume=True, **kw):
    cfg = dict(source=teachers.create("test_cnn_tiny", weights="random"), variant="s", steps=steps,
               batch_size=2, image_size=64, width=0.125, out_channels=16, norm_images=3,
               checkpoint_every=100, progress=False, lr=1e-3, resume=resume)
    cfg.update(kw)
    return pretrain_pdn(_images(), tmp_path / f"{name}.safetensors", **cfg)


def test_pretraining_resumes_on_the_same_loss_curve(tmp_path):
    straight = _pretrain(tmp_path, "straight", 6)
    first = _pretrain(tmp_path, "split", 3, checkpoint_dir=tmp_path / "ck")
    resumed = _pretrain(tmp_path, "resumed", 6, checkpoint_dir=tmp_path / "ck")
    a = json.loads(straight.with_suffix(".json").read_text())["losses"]
    b3 = json.loads(first.with_suffix(".json").read_text())["losses"]
    b = json.loads(resumed.with_suffix(".json").read_text())["losses"]
    assert len(a) == 6 and len(b3) == 3 and b[:3] == b3
    assert b == a  # identical, not just close: same data order, augmentation and optimiser state
    t1, t2 = teachers.create(straight), teachers.create(resumed)
    assert t1.fingerprint() == t2.fingerprint()


def test_teacher_file_records_its_origin_and_loads(tmp_path, monkeypatch):
    p = _pretrain(tmp_path, "t", 4, resume=False)
    meta = json.loads(p.with_suffix(".json").read_text())
    assert meta["teacher"] == "pdn_s" and meta["config"] == {"out_channels": 16, "width": 0.125}
    assert meta["source_cnn"]["name"] == "test_cnn_tiny" and meta["source_cnn"]["layers"] == [3, 4]
    assert meta["steps"] == 4 and meta["num_images"] == 5 and "5 images" in meta["images"]
    assert meta["image_list"] is None  # in-memory arrays have no paths
    t = teachers.create(str(p))
    assert t.kind == "pdn" and t.weights_source == str(p) and t.meta["source_cnn"]["name"] == "test_cnn_tiny"
    # by name: weights=<file>, or the offline default folder $DISTILLAD_WEIGHTS/pdn_s.safetensors
    assert teachers.create("pdn_s", weights=str(p), width=0.125, out_channels=16).fingerprint() == t.fingerprint()
    import shutil
    env = tmp_path / "env"
    env.mkdir()
    shutil.copy(p, env / "pdn_s.safetensors")
    shutil.copy(p.with_suffix(".json"), env / "pdn_s.json")
    monkeypatch.setenv("DISTILLAD_WEIGHTS", str(env))
    assert teachers.create("pdn_s", width=0.125, out_channels=16).fingerprint() == t.fingerprint()
    # output standardised over the pretraining images: per-channel mean ~0, std ~1 on them
    from distillad.data.transforms import Preprocess
    x = Preprocess(64).batch(_images())[0]
    y = t(x, [1]).maps[1]
    assert y.mean(dim=(0, 2, 3)).abs().max() < 0.6
    assert y.std(dim=(0, 2, 3)).mean().item() == pytest.approx(1.0, abs=0.4)


def test_pretraining_reduces_the_regression_loss(tmp_path):
    p = _pretrain(tmp_path, "learn", 40, resume=False, lr=3e-3, grayscale_p=0.0)
    losses = json.loads(p.with_suffix(".json").read_text())["losses"]
    assert np.mean(losses[-8:]) < 0.8 * np.mean(losses[:4])


def test_pretraining_rejects_bad_input(tmp_path):
    from distillad.errors import DataError
    with pytest.raises(DataError, match="no images"):
        pretrain_pdn(tmp_path, tmp_path / "x.safetensors", source=teachers.create("test_cnn_tiny", weights="random"))
    with pytest.raises(ValueError, match=".safetensors"):
        pretrain_pdn(_images(), tmp_path / "x.pt")


def test_pretraining_from_a_folder_records_the_image_paths(tmp_path):
    from PIL import Image
    folder = tmp_path / "imgs" / "sub"
    folder.mkdir(parents=True)
    for i, a in enumerate(_images(3)):
        Image.fromarray(a).save(folder / f"{i}.png")
    p = pretrain_pdn(tmp_path / "imgs", tmp_path / "folder.safetensors", source=teachers.create("test_cnn_tiny", weights="random"),
                     steps=1, batch_size=1, image_size=64, width=0.125, out_channels=16, norm_images=2, progress=False)
    meta = json.loads(p.with_suffix(".json").read_text())
    assert meta["image_list"] == [str(folder / f"{i}.png") for i in range(3)]
    assert str((tmp_path / "imgs").resolve()) in meta["images"]
