"""CNN teachers (timm): stage feature maps and their global averages.

Layer j (1-indexed) is feature stage j in timm's `feature_info` order (what `features_only`
returns): for EfficientNets and ResNets that is 5 stages at strides 2, 4, 8, 16, 32, e.g. for
`wide_resnet50_2` layer 1 = stem (act1), layer 2 = `layer1`, ..., layer 5 = `layer4` (so
torchvision's "layer2 + layer3" are layers 3 and 4 here). `globals[j]` is the global average
of map j (the CNN counterpart of a ViT's CLS token). `channels(j)`/`stride(j)` come from
`feature_info`. `final_norm` and `return_tokens` have no CNN meaning and are ignored.
A forward stops after the deepest stage asked for. Inputs of any size work; map j has
about H / stride(j) rows (exactly, when H is a multiple of the stride).

Normalisation: callers feed ImageNet-normalised tensors (like for every teacher); the teacher
converts them to the network's own statistics (mean = std = 0.5 for `tf_efficientnet_lite*`,
see `inputs.py`).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .base import Teacher, TeacherFeatures
from .build import create_timm
from .inputs import InputAdapter


class CNNTeacher(Teacher):
    kind = "cnn"

    def __init__(self, name: str, model: nn.Module, *, weights_source: str, config: dict):
        super().__init__()
        self.name = name
        self.model = model
        self.weights_source = weights_source
        self.config = dict(config)
        info = list(model.feature_info)
        self._channels = [int(f["num_chs"]) for f in info]
        self._strides = [int(f["reduction"]) for f in info]
        self.num_layers = len(info)
        self.input_multiple = 1
        self.input_adapter = InputAdapter.for_model(model)
        self.freeze()

    def channels(self, layer: int) -> int:
        self.check_layers([layer])
        return self._channels[layer - 1]

    def stride(self, layer: int) -> int:
        self.check_layers([layer])
        return self._strides[layer - 1]

    @torch.no_grad()
    def extract(self, x: torch.Tensor, layers: Sequence[int], *, final_norm: bool = False,
                return_tokens: bool = False) -> TeacherFeatures:
        x = self.input_adapter(x, self.name)
        want = sorted({int(j) for j in layers})
        if not want:
            return TeacherFeatures()
        outs = self.model.forward_intermediates(x, indices=[j - 1 for j in want], stop_early=True,
                                                intermediates_only=True)
        feats = TeacherFeatures()
        for j, m in zip(want, outs):
            feats.maps[j] = m
            feats.globals[j] = m.mean(dim=(2, 3))
        return feats


def _timm_cnn_builder(name: str):
    def build(weights=None, *, seed: int = 0, **arch) -> CNNTeacher:
        model, source = create_timm(name, weights, seed=seed, keep_head=False, **arch)
        config = dict(arch)
        if source == "random":
            config["seed"] = seed
        return CNNTeacher(name, model, weights_source=source, config=config)
    return build


class TinyCNN(nn.Module):
    """4 stages of 3x3 conv (stride 2) + BatchNorm + ReLU; a few thousand parameters.

    Offers the two things CNNTeacher uses from a timm model: `feature_info` and
    `forward_intermediates`."""

    def __init__(self, widths=(4, 8, 16, 32)):
        super().__init__()
        chans = (3, *widths)
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1, bias=False),
                          nn.BatchNorm2d(chans[i + 1]), nn.ReLU(inplace=True))
            for i in range(len(widths)))
        self.feature_info = [dict(num_chs=c, reduction=2 ** (i + 1), module=f"stages.{i}")
                             for i, c in enumerate(widths)]

    def forward_intermediates(self, x, indices, stop_early=True, intermediates_only=True):
        take = set(indices)
        last = max(take) if stop_early else len(self.stages) - 1
        out = []
        for i, stage in enumerate(self.stages[:last + 1]):
            x = stage(x)
            if i in take:
                out.append(x)
        return out


def build_test_cnn_tiny(weights=None, *, seed: int = 0) -> CNNTeacher:
    from . import weights as W

    found = W.resolve("test_cnn_tiny", weights)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TinyCNN()
        # random BatchNorm statistics, so that stage maps are not trivially normalised
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    config = {}
    source = W.load_or_random(model, found, seed, config)
    return CNNTeacher("test_cnn_tiny", model.eval(), weights_source=source, config=config)


_DESCRIPTIONS = {
    "tf_efficientnet_lite0": "EfficientNet-Lite0 (ImageNet), 5 stages, 16/24/40/112/320 ch",
    "tf_efficientnet_lite2": "EfficientNet-Lite2 (ImageNet), 5 stages, 16/24/48/120/352 ch",
    "resnet18": "ResNet-18, 5 stages, 64/64/128/256/512 ch",
    "wide_resnet50_2": "Wide ResNet-50-2, 5 stages, 64/256/512/1024/2048 ch",
    "wide_resnet101_2": "Wide ResNet-101-2, 5 stages, 64/256/512/1024/2048 ch (EfficientAD's PDN source)",
    "regnety_160": "RegNetY-16GF, 5 stages, 32/224/448/1232/3024 ch",
}

#: (registry name, builder, kind, description), registered by `registry`
TEACHERS = [(n, _timm_cnn_builder(n), "cnn", f"{d} [timm {n}]") for n, d in _DESCRIPTIONS.items()]
TEACHERS.append(("test_cnn_tiny", build_test_cnn_tiny, "cnn",
                 "tiny random CNN for unit tests (4 stages, 4/8/16/32 ch); weights='random'"))
