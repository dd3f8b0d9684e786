"""HKT / HKT+: hierarchical knowledge transfer from a PDN teacher to a CBAM student.

Paper: 004_f53e0b7a727d9625.txt ("HKT", sections 2.1-2.5, 3.2); PDN facts: METHODS.md (hkt).

- Teacher (section 2.2, figure 3a / 3c): a pretrained Patch Description Network, PDN-S for HKT and
  PDN-M for HKT+ (`distillad.teachers.pdn`), frozen; its 384-channel output is standardised per
  channel with the statistics of the training set (EfficientAD practice, METHODS.md).
- Student (section 2.2, figure 3b / 3d): the teacher's 4-stage shape with CBAM (section 2.3) after
  the convolutions of stages 1-3. HKT+ doubles the hidden widths and inserts a 1x1 conv after the
  second pooling layer and after the last conv, i.e. the PDN-M shape (8.0 M parameters, matching
  the paper's 8.02 M in Table 5).
- Projectors (section 2.4): for stages 1-3, a 1x1 conv to 384 channels followed by nearest
  interpolation to the stage-4 grid.
- Loss (section 2.4): MSE(stage 4, teacher) + lam * mean_i MSE(P_i(stage i), teacher), lam = 0.5.
- Training (section 3.2): Adam lr 1e-4, weight decay 1e-5, batch 1, 256 x 256 input (plain resize).
  The paper trains 50,000 iterations on a GPU; the default here is `DEFAULT_ITERATIONS` = 5,000
  (a CPU-affordable budget; pass iterations=50_000 to follow the paper).
- Anomaly map (section 2.5, feature fusion module): per output cell, the mean over channels of the
  squared difference between the standardised teacher output and the student's stage-4 output
  (`map_fusion="final"`, the default: section 2.5 compares "the Teacher's and Student's outputs").

What the paper leaves open, and what is chosen here:
- Stage boundaries and where CBAM sits relative to pooling (figure 3 is not in the text): a stage
  ends with its conv + ReLU + CBAM; the average pooling opens the next stage, and projectors read
  the stage output before pooling. This reading reproduces the paper's complexity: the student
  with projectors counts 20.3 GMAC (HKT) and 62.0 GMAC (HKT+) at 256 px with FlopCounterMode,
  against the paper's 20 and 63.18 "GFLOPs" (Tables 4 and 6, which count multiply-adds).
- CBAM internals follow Woo et al. 2018 (shared MLP with reduction 16, channel attention from
  average- and max-pooled descriptors, then spatial attention from a 7x7 conv over the channel
  mean and max maps).
- Whether the projected stages also enter the anomaly map: option `map_fusion="loss"` adds
  lam * mean_i of their squared differences (the per-pixel form of the training loss).
- Map geometry: the 56 x 56 output of a 256 px input has cells centred 16 px + 4 px * i; as in
  EfficientAD the map is padded by 4 cells (edge values here, zeros in EfficientAD) and resized
  bilinearly to the input, then brought back to each image's original geometry.
- Image score (the paper reports image AUROC without saying which score): the maximum of the map
  (EfficientAD's choice).
- Data order: batch 1 from a seeded shuffled stream over the training images (epochs); no
  augmentation (the paper names none).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.transforms import Preprocess
from ..teachers.pdn import OUT_CHANNELS, channel_stats
from ..training import Checkpointer, FeatureCache, seed_everything
from .base import Detector, Prediction, register_model

log = logging.getLogger(__name__)

DEFAULT_ITERATIONS = 5_000
VARIANTS = ("hkt", "hkt+")
DEFAULT_TEACHER = {"hkt": "pdn_s", "hkt+": "pdn_m"}

#: student stages as (kind, channels, kernel); "out" = the teacher's output channels
STUDENT_STAGES = {
    "hkt": [  # PDN-S shape (figure 3b)
        [("conv", 128, 4), ("relu",)],
        [("pool",), ("conv", 256, 4), ("relu",)],
        [("pool",), ("conv", 256, 3), ("relu",)],
        [("conv", "out", 4)],
    ],
    "hkt+": [  # PDN-M shape (figure 3d): doubled widths, 1x1 convs after pool 2 and after the last conv
        [("conv", 256, 4), ("relu",)],
        [("pool",), ("conv", 512, 4), ("relu",)],
        [("pool",), ("conv", 512, 1), ("relu",), ("conv", 512, 3), ("relu",)],
        [("conv", "out", 4), ("relu",), ("conv", "out", 1)],
    ],
}


class CBAM(nn.Module):
    """Convolutional Block Attention Module (section 2.3, figure 4; Woo et al. 2018).

    Channel attention Mc = sigmoid(MLP(AvgPool(F)) + MLP(MaxPool(F))), F' = Mc * F; spatial
    attention Ms = sigmoid(conv7x7([mean_c(F'); max_c(F')])), F'' = Ms * F'. The MLP is shared
    (two 1x1 convs without bias, ReLU between, reduction `reduction`)."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1, bias=False), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, channels, 1, bias=False))
        self.spatial = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ca = torch.sigmoid(self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1)))
        x = x * ca
        sa = torch.sigmoid(self.spatial(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)))
        return x * sa


class HKTStudent(nn.Module):
    """The 4-stage student with CBAM after stages 1-3 and projectors for stages 1-3.

    forward(x) -> (stage-4 output B x C x h x w, [P_1(F_1), P_2(F_2), P_3(F_3)] each B x C x h x w)
    (the projected list is empty when `projectors=False`).
    """

    def __init__(self, variant: str = "hkt", *, out_channels: int = OUT_CHANNELS, width: float = 1.0,
                 cbam: bool = True, projectors: bool = True, reduction: int = 16):
        super().__init__()
        if variant not in STUDENT_STAGES:
            raise ValueError(f"unknown HKT variant {variant!r}; use one of {VARIANTS}")
        self.stages = nn.ModuleList()
        widths = []
        c_in = 3
        for i, spec in enumerate(STUDENT_STAGES[variant]):
            mods: list[nn.Module] = []
            for layer in spec:
                if layer[0] == "conv":
                    c_out = out_channels if layer[1] == "out" else max(1, int(round(layer[1] * width)))
                    mods.append(nn.Conv2d(c_in, c_out, layer[2]))
                    c_in = c_out
                elif layer[0] == "relu":
                    mods.append(nn.ReLU(inplace=True))
                else:
                    mods.append(nn.AvgPool2d(2, 2))
            if cbam and i < 3:
                mods.append(CBAM(c_in, reduction))
            self.stages.append(nn.Sequential(*mods))
            widths.append(c_in)
        self.projectors = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in widths[:3]) if projectors else nn.ModuleList()

    def forward(self, x: torch.Tensor, project: bool = True) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        out = feats[-1]
        proj = []
        if project:
            for p, f in zip(self.projectors, feats[:3]):
                proj.append(F.interpolate(p(f), size=out.shape[-2:], mode="nearest"))
        return out, proj


def hkt_loss(teacher: torch.Tensor, out: torch.Tensor, projected: Sequence[torch.Tensor], lam: float) -> torch.Tensor:
    """Section 2.4: L = L_4 + lam * L_P, L_4 = MSE(S_4, T), L_P = mean_i MSE(P_i(S_i), T)."""
    loss = F.mse_loss(out, teacher)
    if projected and lam:
        loss = loss + lam * torch.stack([F.mse_loss(p, teacher) for p in projected]).mean()
    return loss


@register_model
class HKT(Detector):
    """HKT / HKT+ detector (`variant="hkt"` or `"hkt+"`); see the module docstring.

    teacher: a PDN Teacher, a registry name or a teacher file `<x>.safetensors` (default: pdn_s for
        HKT, pdn_m for HKT+, which need a pretrained file: `distillad teachers pretrain-pdn`).
    iterations: training steps (paper: 50,000; default 5,000). batch_size: images per step (paper 1).
    lam: weight of the projected-stage loss (paper 0.5). cbam / projectors: the two components of the
        ablation (Table 6); both on in the paper.
    map_fusion: "final" (stage-4 difference, default) or "loss" (adds lam * projected differences).
    teacher_norm: "train" (standardise the teacher output with training-set channel statistics,
        default) or "none" (use the teacher output as it comes, already standardised on its
        pretraining images).
    width: student hidden-width multiplier (1.0 = paper; small values for tests only).
    cache_bytes: memory budget for cached teacher outputs (spilled to disk beyond it).
    """

    name = "hkt"

    def __init__(self, teacher=None, variant: str = "hkt", image_size: int = 256,
                 iterations: int = DEFAULT_ITERATIONS, lr: float = 1e-4, weight_decay: float = 1e-5,
                 batch_size: int = 1, lam: float = 0.5, cbam: bool = True, projectors: bool = True,
                 map_fusion: str = "final", teacher_norm: str = "train", width: float = 1.0,
                 seed: int = 0, checkpoint_every: int = 500, cache_bytes: int = 1 << 30):
        self.teacher = teacher
        self.variant = variant
        self.image_size = image_size
        self.iterations = iterations
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.lam = lam
        self.cbam = cbam
        self.projectors = projectors
        self.map_fusion = map_fusion
        self.teacher_norm = teacher_norm
        self.width = width
        self.seed = seed
        self.checkpoint_every = checkpoint_every
        self.cache_bytes = cache_bytes

    # ------------------------------------------------------------------ helpers
    def _check_params(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"hkt: variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.map_fusion not in ("final", "loss"):
            raise ValueError(f"hkt: map_fusion must be 'final' or 'loss', got {self.map_fusion!r}")
        if self.teacher_norm not in ("train", "none"):
            raise ValueError(f"hkt: teacher_norm must be 'train' or 'none', got {self.teacher_norm!r}")
        if int(self.iterations) < 1 or int(self.batch_size) < 1:
            raise ValueError("hkt: iterations and batch_size must be >= 1")
        if int(self.image_size) < 64:
            raise ValueError(f"hkt: image_size {self.image_size} is too small (the PDN needs >= 64 px)")
        if float(self.lam) < 0:
            raise ValueError("hkt: lam must be >= 0")

    def _make_teacher(self):
        if self.teacher is None:
            from ..teachers import create
            return create(DEFAULT_TEACHER.get(self.variant, "pdn_s")).freeze()
        return super()._make_teacher()

    def _preprocess(self) -> Preprocess:
        return Preprocess(int(self.image_size))

    def _build_student(self) -> HKTStudent:
        return HKTStudent(self.variant, out_channels=self.teacher_.channels(1), width=float(self.width),
                          cbam=bool(self.cbam), projectors=bool(self.projectors))

    def _teacher_out(self, x: torch.Tensor) -> torch.Tensor:
        t = self.teacher_(x, [1]).maps[1]
        return (t - self.t_mean_) / self.t_std_

    # ------------------------------------------------------------------ fit
    def _fit(self, train, *, checkpoint_dir: Path | None, resume: bool, progress: bool) -> None:
        from tqdm.auto import tqdm

        self._check_params()
        self.teacher_ = self._make_teacher()
        if self.teacher_.kind != "pdn":
            raise ValueError(f"hkt: the teacher must be a PDN (pdn_s / pdn_m or a pretrained PDN file), "
                             f"got {self.teacher_.name} ({self.teacher_.kind})")
        seed_everything(int(self.seed))  # the student's initial weights
        pre = self._preprocess()
        # inputs kept as uint8 at model size (cheap), teacher outputs cached (frozen, no augmentation)
        arrays = [pre.apply_array(s.load_image())[0] for s in train]
        cache = FeatureCache(int(self.cache_bytes))
        it = tqdm(range(len(arrays)), desc="hkt teacher features", disable=not progress, leave=False)
        for i in it:
            cache.put(i, {"t": self.teacher_(pre.normalise(arrays[i])[None], [1]).maps[1][0]})
        if self.teacher_norm == "train":
            mean, std = channel_stats(cache.get(i)["t"][None] for i in range(len(arrays)))
        else:
            c = self.teacher_.channels(1)
            mean, std = torch.zeros(1, c, 1, 1), torch.ones(1, c, 1, 1)
        self.t_mean_, self.t_std_ = mean, std

        student = self._build_student()
        with torch.no_grad():
            out, _ = student(pre.normalise(arrays[0])[None], project=False)
        t_shape = cache.get(0)["t"].shape
        if tuple(out.shape[1:]) != tuple(t_shape):
            raise ValueError(f"hkt: student output {tuple(out.shape[1:])} does not match teacher output "
                             f"{tuple(t_shape)} at {self.image_size} px; use a PDN teacher")
        opt = torch.optim.Adam(student.parameters(), lr=float(self.lr), weight_decay=float(self.weight_decay))
        ckpt = Checkpointer(checkpoint_dir, every=int(self.checkpoint_every)) if checkpoint_dir else None
        step, losses = 0, []
        if ckpt is not None and resume:
            state = ckpt.load({"student": student}, {"adam": opt})
            if state is not None:
                step, extra = state
                losses = list(extra.get("losses", []))
        n, bs = len(arrays), int(self.batch_size)
        student.train()
        bar = tqdm(total=int(self.iterations), initial=step, desc=f"{self.variant} train", disable=not progress)
        while step < int(self.iterations):
            idx = [_stream_index(int(self.seed), k, n) for k in range(step * bs, (step + 1) * bs)]
            x = torch.stack([pre.normalise(arrays[i]) for i in idx])
            t = (torch.stack([cache.get(i)["t"] for i in idx]) - mean) / std
            out, proj = student(x, project=bool(self.projectors))
            loss = hkt_loss(t, out, proj, float(self.lam))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            losses.append(float(loss.detach()))
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-10:]):.4f}")
            if ckpt is not None and (ckpt.due(step) or step == int(self.iterations)):
                ckpt.save(step, {"student": student}, {"adam": opt}, {"losses": losses})
        bar.close()
        cache.close()
        student.eval()
        self.student_ = student
        self.losses_ = losses

    # ------------------------------------------------------------------ predict
    def anomaly_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised input batch B x 3 x S x S -> maps B x h x w on the output grid (section 2.5)."""
        t = self._teacher_out(x)
        project = self.map_fusion == "loss" and bool(self.projectors)
        out, proj = self.student_(x, project=project)
        d = ((t - out) ** 2).mean(1)
        if project and proj:
            d = d + float(self.lam) * torch.stack([((t - p) ** 2).mean(1) for p in proj]).mean(0)
        return d

    def _to_input_grid(self, d: torch.Tensor, size: int) -> torch.Tensor:
        """Output-grid maps -> input-size maps: pad 4 cells (edge values), bilinear resize."""
        pad = 4  # cells: the unpadded PDN (stride 4, 33 px patches) leaves ~16 px = 4 cells at each border
        d = F.pad(d[:, None], (pad, pad, pad, pad), mode="replicate")
        return F.interpolate(d, size=(size, size), mode="bilinear", align_corners=False)[:, 0]

    def _predict_batch(self, images: list[np.ndarray]) -> Prediction:
        pre = self._preprocess()
        x, geoms = pre.batch(images)
        self.student_.eval()
        with torch.no_grad():
            m = self._to_input_grid(self.anomaly_maps(x), pre.size)
        scores = m.flatten(1).amax(1).numpy().astype(np.float32)
        maps = [g.restore(mi) for g, mi in zip(geoms, m)]
        return Prediction(scores, maps)

    # ------------------------------------------------------------------ persistence
    def _state_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"student.{k}": v for k, v in self.student_.state_dict().items()}
        out["t_mean"] = self.t_mean_
        out["t_std"] = self.t_std_
        return out

    def _extra_state(self) -> dict:
        losses = getattr(self, "losses_", [])
        return {"losses_every_10": [float(np.mean(losses[i:i + 10])) for i in range(0, len(losses), 10)],
                "iterations_done": len(losses), "complexity": self.complexity()}

    def _load_state(self, tensors: dict[str, torch.Tensor], extra: dict) -> None:
        self.t_mean_ = tensors["t_mean"]
        self.t_std_ = tensors["t_std"]
        student = self._build_student()
        student.load_state_dict({k[len("student."):]: v for k, v in tensors.items() if k.startswith("student.")})
        student.eval()
        self.student_ = student
        self.losses_ = []

    # ------------------------------------------------------------------ complexity
    def complexity(self, image_size: int | None = None) -> dict:
        """Parameters (student incl. projectors, teacher) and FLOPs per image at inference, counted
        with `torch.utils.flop_counter.FlopCounterMode` on meta tensors (1 multiply-add = 2 FLOPs;
        convolutions and matmuls only, elementwise ops such as CBAM's products are not counted).
        The paper's "GFLOPs" (Table 4: 20 / 63) are multiply-adds: compare with `gmacs`."""
        from .common import count_flops

        if not hasattr(self, "student_"):
            self._check_fitted("complexity")
        size = int(image_size or self.image_size)
        x = torch.empty(1, 3, size, size)
        project = self.map_fusion == "loss" and bool(self.projectors)
        ft = count_flops(self.teacher_.net, x)
        fs = count_flops(self.student_, x, project=project)
        fp = count_flops(self.student_, x, project=bool(self.projectors))  # the training-time graph incl. projectors
        return {
            "image_size": size,
            "params_student": sum(p.numel() for p in self.student_.parameters()),
            "params_projectors": sum(p.numel() for p in self.student_.projectors.parameters()),
            "params_teacher": sum(p.numel() for p in self.teacher_.net.parameters()),
            "flops_teacher": int(ft), "flops_student": int(fs), "flops_inference": int(ft + fs),
            "flops_student_with_projectors": fp,
            "gmacs_inference": round((ft + fs) / 2e9, 3),
        }


def _stream_index(seed: int, k: int, n: int) -> int:
    """The k-th training index of a seeded stream of shuffled epochs (resumable without state)."""
    epoch, pos = divmod(k, n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return int(perm[pos])


def _with_default(fn, **defaults):
    """Copy of `fn`'s signature with other defaults (what `Detector._param_names` reads)."""
    import inspect
    sig = inspect.signature(fn)
    sig = sig.replace(parameters=[p.replace(default=defaults[p.name]) if p.name in defaults else p
                                  for p in sig.parameters.values()])
    return sig


@register_model
class HKTPlus(HKT):
    """`hkt+`: the same detector with `variant="hkt+"` by default, registered under its own name so
    that `distillad bench --models hkt,hkt+` compares both (`create_model("hkt", variant="hkt+")`
    builds the same model)."""

    name = "hkt+"

    def __init__(self, teacher=None, variant: str = "hkt+", **params):
        super().__init__(teacher=teacher, variant=variant, **params)


HKTPlus.__init__.__signature__ = _with_default(HKT.__init__, variant="hkt+")
