"""timm models with distillad's weight handling (local files only, explicit random init).

Models are always built with `pretrained=False` (timm never reaches a hub) and the weights are
then loaded from the located file through timm's own checkpoint filter for the architecture
(`weights.load_into`). Construction runs under a fixed seed, so `weights="random"` rebuilds the
same model every time and a new classifier head is reproducible.
"""
from __future__ import annotations

import logging
import os

import torch
from torch import nn

from . import weights as W

log = logging.getLogger(__name__)

#: registry name -> timm model name, for teachers whose names differ from timm's
TIMM_NAMES = {
    "dinov2_vits14": "vit_small_patch14_dinov2.lvd142m",
    "dinov2_vitb14": "vit_base_patch14_dinov2.lvd142m",
    "dinov2_vits14_reg": "vit_small_patch14_reg4_dinov2.lvd142m",
    "dinov2_vitb14_reg": "vit_base_patch14_reg4_dinov2.lvd142m",
}


def classifier_names(model: nn.Module) -> tuple[str, ...]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    c = cfg.get("classifier")
    if not c:
        return ()
    return (c,) if isinstance(c, str) else tuple(c)


def create_timm(name: str, weights=None, *, seed: int = 0, keep_head: bool = True,
                **timm_kwargs) -> tuple[nn.Module, str]:
    """-> (timm model in eval mode, description of where its weights came from).

    name: a distillad registry name (weights are looked up under it) or any timm model name.
    keep_head=False builds the model without classifier (`num_classes=0`; teachers).
    With `num_classes` in `timm_kwargs` different from the checkpoint's, the classifier is new
    (seeded init) and every other weight comes from the checkpoint.
    """
    import timm

    timm_name = TIMM_NAMES.get(name, name)
    found = W.resolve(name, weights)  # fails at once, before any construction, when missing
    kwargs = dict(timm_kwargs)
    if not keep_head:
        kwargs["num_classes"] = 0
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = timm.create_model(timm_name, pretrained=False, **kwargs)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise ValueError(f"unknown timm model {timm_name!r} (teacher {name!r})") from None
        raise
    except TypeError as e:
        raise ValueError(f"{name}: bad option for timm's {timm_name}: {e}") from None
    if found is None:
        source = "random"
    else:
        default_classes = (getattr(model, "pretrained_cfg", None) or {}).get("num_classes")
        new_head = keep_head and "num_classes" in kwargs and kwargs["num_classes"] != default_classes
        W.load_into(model, W.read_checkpoint(found.path), str(found.path),
                    classifier=classifier_names(model), new_head=new_head)
        source = found.source
        log.info("%s: weights from %s", name, source)
    return model.eval(), source


def build_timm(name: str, weights: str | os.PathLike | None = None, *, seed: int = 0,
               **timm_kwargs) -> nn.Module:
    """The full timm model (classifier included) with distillad's weight handling.

    weights: None = the offline default (see `distillad.teachers.weights`), "random" =
    explicit random init (seeded by `seed`), or a checkpoint file (timm or original format).
    Pass `num_classes=k` for a new k-way classifier on top of the pretrained body (the
    checkpoint's classifier is dropped when its size differs). The description of where the
    weights came from is in the returned model's `weights_source` attribute.

    Unlike a Teacher, the returned model expects input normalised with its own statistics
    (`model.pretrained_cfg["mean"/"std"]`: 0.5 / 0.5 for `tf_efficientnet_lite*`);
    `distillad.teachers.inputs.InputAdapter.for_model(model)` converts the project's
    ImageNet-normalised tensors (and replicates 1-channel input) exactly.
    """
    model, source = create_timm(name, weights, seed=seed, keep_head=True, **timm_kwargs)
    model.weights_source = source
    return model
