"""The shared machinery every method relies on: atomic persistence, the Detector contract's
save/load checks, resumable checkpoints and the feature cache."""
import json
import os

import numpy as np
import pytest
import torch

import distillad
from distillad.errors import ModelFileError, NotFittedError
from distillad.io import flatten_state, read_tensors, unflatten_state, write_json, write_tensors
from distillad.models.base import Detector, Prediction, register_model
from distillad.training import Checkpointer, FeatureCache


@register_model
class _MeanDetector(Detector):
    """Test double: score = mean absolute deviation from the training mean image."""

    name = "_test_mean"

    def __init__(self, scale=1.0):
        self.scale = scale

    def _fit(self, train, *, checkpoint_dir, resume, progress):
        self.mean_ = torch.tensor(np.mean([s.load_image().mean() for s in train]), dtype=torch.float32)

    def _predict_batch(self, images):
        maps = [np.abs(im.mean(2).astype(np.float32) - float(self.mean_)) * self.scale for im in images]
        return Prediction(np.array([m.max() for m in maps], np.float32), maps)

    def _state_tensors(self):
        return {"mean": self.mean_.reshape(1)}

    def _load_state(self, tensors, extra):
        self.mean_ = tensors["mean"][0]


def _samples(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return [distillad.data.Sample(rng.integers(100, 110, (12, 10, 3), dtype=np.uint8)) for _ in range(n)]


def test_predict_before_fit_is_a_clear_error():
    with pytest.raises(NotFittedError, match="before fit"):
        _MeanDetector().predict(_samples(1))


def test_save_load_roundtrip_and_threshold(tmp_path):
    det = _MeanDetector(scale=2.0).fit(_samples())
    assert det.threshold_ is not None
    det.save(tmp_path / "m")
    back = distillad.load(tmp_path / "m")
    assert isinstance(back, _MeanDetector) and back.scale == 2.0
    im = _samples(1, seed=3)
    np.testing.assert_array_equal(det.predict(im).maps[0], back.predict(im).maps[0])
    assert back.threshold_ == det.threshold_
    # saving again over an existing model replaces it atomically (no leftovers)
    det.save(tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_load_refuses_other_versions_and_broken_files(tmp_path):
    _MeanDetector().fit(_samples()).save(tmp_path / "m")
    cfg_path = tmp_path / "m" / "config.json"
    cfg = json.loads(cfg_path.read_text())

    cfg2 = dict(cfg, model_version=99)
    cfg_path.write_text(json.dumps(cfg2))
    with pytest.raises(ModelFileError, match="model version 99"):
        distillad.load(tmp_path / "m")

    cfg_path.write_text(json.dumps(dict(cfg, format_version=7)))
    with pytest.raises(ModelFileError, match="format version 7"):
        distillad.load(tmp_path / "m")

    cfg_path.write_text(json.dumps(cfg))
    (tmp_path / "m" / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="weights.safetensors"):
        distillad.load(tmp_path / "m")

    with pytest.raises(ModelFileError, match="not a saved distillad model"):
        distillad.load(tmp_path / "nothing-here")


def test_interrupted_save_keeps_the_old_model(tmp_path, monkeypatch):
    det = _MeanDetector().fit(_samples())
    det.save(tmp_path / "m")
    before = (tmp_path / "m" / "config.json").read_text()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("distillad.models.base.write_json", boom)
    with pytest.raises(OSError):
        det.save(tmp_path / "m")
    assert (tmp_path / "m" / "config.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary folder left


def test_atomic_tensor_write_leaves_no_partial_file(tmp_path, monkeypatch):
    p = tmp_path / "t.safetensors"
    write_tensors(p, {"a": torch.ones(3)})

    def boom(*a, **k):
        raise OSError("killed")

    monkeypatch.setattr("distillad.io.save_file", boom)
    with pytest.raises(OSError):
        write_tensors(p, {"a": torch.zeros(3)})
    assert torch.equal(read_tensors(p)["a"], torch.ones(3))
    assert [q.name for q in tmp_path.iterdir()] == ["t.safetensors"]


def test_flatten_state_roundtrip_of_an_optimiser_state():
    m = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    m(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, skel = flatten_state(opt.state_dict())
    json.dumps(skel)  # the skeleton is plain JSON
    back = unflatten_state(tensors, json.loads(json.dumps(skel)))
    opt2 = torch.optim.Adam(torch.nn.Linear(3, 2).parameters(), lr=1.0)
    opt2.load_state_dict(back)
    assert opt2.param_groups[0]["lr"] == 1e-3
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def _train(steps, ckpt=None, resume=False, stop_at=None):
    torch.manual_seed(0)
    m = torch.nn.Linear(4, 1)
    opt = torch.optim.Adam(m.parameters(), lr=0.1)
    start, losses = 0, []
    if ckpt is not None and resume:
        got = ckpt.load({"m": m}, {"opt": opt})
        if got:
            start, extra = got
            losses = extra["losses"]
    for step in range(start, steps):
        x = torch.randn(8, 4)  # uses the global RNG: a resumed run must continue the same stream
        loss = ((m(x) - x.sum(1, keepdim=True)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if ckpt is not None:
            ckpt.save(step + 1, {"m": m}, {"opt": opt}, {"losses": losses})
        if stop_at is not None and step + 1 == stop_at:
            break
    return losses


def test_checkpoint_resume_continues_the_same_curve(tmp_path):
    straight = _train(6)
    ck = Checkpointer(tmp_path / "ck")
    _train(6, ck, stop_at=3)
    resumed = _train(6, ck, resume=True)
    np.testing.assert_allclose(resumed, straight, rtol=0, atol=0)


def test_feature_cache_spills_beyond_budget_and_returns_the_same(tmp_path):
    cache = FeatureCache(budget_bytes=2 * 4 * 100, spill_dir=tmp_path)
    items = {i: {"f": torch.randn(10, 10)} for i in range(5)}
    for k, v in items.items():
        cache.put(k, v)
    assert len(cache) == 5 and cache.spilled == 3
    for k, v in items.items():
        assert torch.equal(cache.get(k)["f"], v["f"])
    cache.close()


def test_write_json_is_atomic(tmp_path):
    write_json(tmp_path / "a.json", {"x": np.float32(1.5), "t": (1, 2)})
    assert json.loads((tmp_path / "a.json").read_text()) == {"t": [1, 2], "x": 1.5}
    assert os.listdir(tmp_path) == ["a.json"]
