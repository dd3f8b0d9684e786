"""`dual_student` (Park, Seo, Kim: "Generalist Multi-Class Anomaly Detection via Distillation
to Two Heterogeneous Student Networks") and `dinomaly` (its encoder-decoder student alone, the
L_SD row of table 3).

One frozen teacher, two students trained jointly (section 3.4):
- encoder-decoder student S_D (section 3.2, Dinomaly): noisy bottleneck + 8 linear-attention
  decoder blocks reconstructing two groups of middle teacher layers; loss eq. (1), the loose
  global cosine distance, with Dinomaly's hard mining;
- encoder-encoder student S_E (section 3.3): a network of the teacher's architecture trained
  from scratch to regress the teacher's CLS token of every block and the final one (eq. 2);
- joint objective (section 3.4): P(x) = 1 - sigmoid(L_SE) sigmoid(L_SD), BCE with y = 1 for
  normal images; `supervised=True` also trains on anomalous images (y = 0), which the paper
  says the framework extends to;
- inference (section 3.5): AC(x) = sigmoid(L'_SE) sigmoid(L_SD), L'_SE from the last CLS only;
  the anomaly map is the decoder student's.

Choices the paper leaves open, and what is done here:
- Score scaling before the sigmoid: none (the paper writes sigmoid(L) directly).
- Distance between CLS tokens (`cls_distance`): "mse", the mean over channels of the squared
  difference (appendix K: "mean squared error (MSE) between the class tokens"); "sse" is the
  squared L2 norm of eq. (2) taken literally. With raw DINOv2 CLS tokens the sum is in the
  hundreds, which saturates the sigmoid and leaves the encoder student without gradient.
- "The final class token" (eq. 2): the CLS after the teacher's final LayerNorm, added to the
  per-block raw CLS tokens, m = L + 1 (`encoder_final_norm`); section 3.5's last-CLS score
  uses it.
- L_SD at inference (`decoder_score`): "global_cosine" = eq. (1) per image, as section 3.5
  writes AC(x) with L_SD; "map_top1" = Dinomaly's own image score (mean of the top 1 % of the
  anomaly map), the default of the `dinomaly` model.
- The returned score for Noisy-OR fusion is log AC(x) (same ranking as AC(x), but it does not
  round to 1.0 in float32 when both losses are large, which would create ties).
- fusion="sum" (table 3 ablation): the score is L'_SE + L_SD, and training minimises the sum of
  the two mean losses (the paper only describes the inference side).
- A single student (students="decoder" | "encoder") trains on its own mean loss (Dinomaly's
  recipe); with supervised=True it uses the BCE of P = 1 - sigmoid(L).
- Optimiser: one StableAdamW over both students with the same hyper-parameters (appendix D);
  gradient-norm clipping 0.1 (Dinomaly) applied to each student separately.
- The learning rate: 2e-3 (industrial); appendix D uses 1e-4 for semantic datasets: set `lr`.
- Batch sampling: a stream of concatenated random permutations of the training set, cut into
  batches of `batch_size` (like a shuffled loader with drop_last, but a 1-shot set still
  gives full batches). Iterations: the paper's single-class value, 5000 (multi-class 50k).
- Encoder-only maps: the encoder student has no spatial output, so its "map" is constant
  (the image score everywhere); pixel metrics are then at chance, by design.

Frozen teacher features are computed once before training (there is no augmentation) and
kept in a `FeatureCache` within `cache_budget_mb` (spilled to disk beyond it): the decoder
groups, the CLS targets and the preprocessed image (uint8) for the encoder student.

Scale-out: under `torchrun` (or any initialised torch.distributed process group) the students
are wrapped in DistributedDataParallel; `batch_size` is the global batch, split evenly over
the processes; the hard-mining threshold is computed over the global batch (all_gather), so
the updates equal those of one process on the whole batch (up to float rounding) when
dropout is off. Every process caches the teacher features of the whole training set (they run
in parallel; no process waits for another). Dropout masks differ per process (seeded with
seed + rank). A CNN encoder student on CUDA uses SyncBatchNorm.
"""
from __future__ import annotations

import logging
import os
import time
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...data.transforms import Preprocess
from ...training import Checkpointer, FeatureCache, seed_everything
from ..base import Detector, Prediction, register_model
from .features import Layout, make_layout, teacher_features, tokens_to_map
from .nn import DinomalyDecoder, EncoderStudent
from .objectives import (cls_distance, global_cosine_distance, hard_mining_p, log_sigmoid_prod,
                         noisy_or_bce, single_bce)
from .optim import StableAdamW, warm_cosine_lr

log = logging.getLogger(__name__)

WARMUP_ITERS = 100          # Dinomaly: linear warm-up over 100 iterations ...
FINAL_LR_RATIO = 0.1        # ... then cosine to lr / 10 (2e-3 -> 2e-4)
BETAS = (0.9, 0.999)
EPS = 1e-10
MAP_TOP_FRACTION = 0.01     # Dinomaly image score: mean of the top 1 % of the map
MAP_SIGMA = 4.0             # Gaussian smoothing of the map: sigma 4, 5 x 5 kernel (reference)
MAP_KERNEL = 5
STUDENT_SEED_OFFSET = 7919  # encoder student init seed = this + seed (never a random teacher's seed)


class _Students(nn.Module):
    """Both students in one module, so DistributedDataParallel wraps (and syncs) them at once."""

    def __init__(self, decoder: DinomalyDecoder | None, encoder: EncoderStudent | None):
        super().__init__()
        self.decoder = decoder
        self.encoder = encoder

    def forward(self, groups=None, images=None):
        preds = self.decoder(groups) if self.decoder is not None else None
        cls = self.encoder(images) if self.encoder is not None else None
        return preds, cls


def _gaussian_5x5(maps: torch.Tensor, sigma: float = MAP_SIGMA, size: int = MAP_KERNEL) -> torch.Tensor:
    """B x H x W -> smoothed, zero padding (as the reference's padded conv)."""
    x = torch.arange(size, dtype=maps.dtype, device=maps.device) - (size - 1) / 2
    k1 = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    k2 = torch.outer(k1, k1)
    k2 = (k2 / k2.sum()).view(1, 1, size, size)
    return F.conv2d(maps[:, None], k2, padding=size // 2)[:, 0]


class _Dist:
    """torch.distributed state (world 1 when not distributed)."""

    def __init__(self):
        import torch.distributed as dist

        self.on = dist.is_available() and dist.is_initialized()
        if not self.on and dist.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend)
            self.on = True
        self.rank = dist.get_rank() if self.on else 0
        self.world = dist.get_world_size() if self.on else 1

    def gather(self, flat: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        parts = [torch.empty_like(flat) for _ in range(self.world)]
        dist.all_gather(parts, flat.contiguous())
        return torch.cat(parts)


@register_model
class DualStudent(Detector):
    """Teacher + encoder-decoder student + encoder-encoder student, Noisy-OR fused.

    Parameters (paper / reference defaults; see the module docstring for open choices)
    ----------
    teacher: Teacher, registry name or teacher file (default "dinov2_vitb14_reg", appendix D).
    students: "both" | "decoder" | "encoder" (table 3 rows L_SD / L_SE alone).
    fusion: "noisy_or" (section 3.4/3.5) | "sum" (table 3 ablation).
    encoder_score: "last_cls" (L'_SE, section 3.5) | "all_cls" (L''_SE, table 3 ablation).
    decoder_score: "global_cosine" (eq. 1) | "map_top1" (Dinomaly's top-1 % map mean).
    supervised: also train on anomalous training images (label 1 -> y = 0 in the BCE).
    layers: teacher layers for the decoder (default ViT 3..10 of 12, CNN stages 2..L-1).
    num_groups: layer groups (2: 3-6 and 7-10). decoder_depth: decoder blocks (8).
    dropout: noisy-bottleneck dropout (0.2; 0.4 for very large sets, appendix D).
    image_size / resize: centre crop `image_size` of the image resized to `resize` (448 -> 392
      for industrial sets); resize=None or == image_size: plain resize (semantic sets).
    iterations, batch_size (global), lr, weight_decay, grad_clip: training (5000, 16, 2e-3,
      1e-4, 0.1); warm-up 100 iterations then cosine to lr/10.
    cls_distance: "mse" | "sse" (see module docstring). encoder_final_norm: add the final-normed
      CLS as the last target (ViT).
    cache_budget_mb: memory for cached teacher features (disk beyond). seed. device: None = cuda
      when available (cuda:LOCAL_RANK under torchrun), else cpu.
    """

    name = "dual_student"
    version = 1

    def __init__(self, teacher="dinov2_vitb14_reg", students="both", fusion="noisy_or",
                 encoder_score="last_cls", decoder_score="global_cosine", supervised=False,
                 layers=None, num_groups=2, decoder_depth=8, dropout=0.2, image_size=392, resize=448,
                 iterations=5000, batch_size=16, lr=2e-3, weight_decay=1e-4, grad_clip=0.1,
                 cls_distance="mse", encoder_final_norm=True, cache_budget_mb=4096, seed=0, device=None):
        self.teacher = teacher
        self.students = students
        self.fusion = fusion
        self.encoder_score = encoder_score
        self.decoder_score = decoder_score
        self.supervised = supervised
        self.layers = layers
        self.num_groups = num_groups
        self.decoder_depth = decoder_depth
        self.dropout = dropout
        self.image_size = image_size
        self.resize = resize
        self.iterations = iterations
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.grad_clip = grad_clip
        self.cls_distance = cls_distance
        self.encoder_final_norm = encoder_final_norm
        self.cache_budget_mb = cache_budget_mb
        self.seed = seed
        self.device = device

    # ------------------------------------------------------------------ configuration
    @property
    def _has_decoder(self) -> bool:
        return self.students in ("both", "decoder")

    @property
    def _has_encoder(self) -> bool:
        return self.students in ("both", "encoder")

    def _check_params(self, teacher) -> None:
        def one_of(name, allowed):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{self.name}: {name}={getattr(self, name)!r}, expected one of {allowed}")

        one_of("students", ("both", "decoder", "encoder"))
        one_of("fusion", ("noisy_or", "sum"))
        one_of("encoder_score", ("last_cls", "all_cls"))
        one_of("decoder_score", ("global_cosine", "map_top1"))
        one_of("cls_distance", ("mse", "sse"))
        if self.supervised and self.students == "both" and self.fusion == "sum":
            raise ValueError(f"{self.name}: supervised training needs fusion='noisy_or' (the BCE objective)")
        if int(self.iterations) < 1 or int(self.batch_size) < 1:
            raise ValueError(f"{self.name}: iterations and batch_size must be >= 1")
        if not 0 <= float(self.dropout) < 1:
            raise ValueError(f"{self.name}: dropout must be in [0, 1)")
        if int(self.image_size) % teacher.input_multiple:
            raise ValueError(f"{self.name}: image_size {self.image_size} is not a multiple of "
                             f"{teacher.input_multiple} (teacher {teacher.name})")
        if self.resize is not None and int(self.resize) < int(self.image_size):
            raise ValueError(f"{self.name}: resize {self.resize} < image_size {self.image_size}")
        if self.students in ("both", "encoder") and self.encoder_score == "all_cls":
            m = teacher.num_layers + (1 if self.encoder_final_norm and teacher.kind == "vit" else 0)
            if m < 2:
                raise ValueError(f"{self.name}: encoder_score='all_cls' needs at least 2 CLS levels")

    def _preprocess(self) -> Preprocess:
        s = int(self.image_size)
        if self.resize is None or int(self.resize) == s:
            return Preprocess(s, mode="resize")
        return Preprocess(s, mode="resize_crop", resize=int(self.resize))

    def _device(self, dist: _Dist | None = None) -> torch.device:
        if self.device is not None:
            return torch.device(self.device)
        if torch.cuda.is_available():
            return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if dist and dist.on else "cuda")
        return torch.device("cpu")

    def _num_heads(self, dim: int) -> int:
        h = None
        if self.teacher_.kind == "vit":  # the teacher's own head count (12 for ViT-B, 6 for ViT-S)
            blocks = getattr(getattr(self.teacher_, "model", None), "blocks", None)
            h = getattr(getattr(blocks[0], "attn", None), "num_heads", None) if blocks is not None else None
        h = int(h or max(1, dim // 64))
        while dim % h:
            h -= 1
        return h

    def _build_students(self, lay: Layout) -> _Students:
        dec = enc = None
        if self._has_decoder:
            fuse = "mean" if lay.kind == "vit" else "concat"
            width = lay.group_dims[0] if fuse == "mean" else sum(lay.group_dims)
            dec = DinomalyDecoder(lay.group_dims, [len(g) for g in lay.groups], depth=int(self.decoder_depth),
                                  num_heads=self._num_heads(width), dropout=float(self.dropout), fuse=fuse)
        if self._has_encoder:
            from ...teachers import create

            # same architecture, fresh random weights; the seed differs from a random teacher's own
            arch = {k: v for k, v in (self.teacher_.config or {}).items() if k != "seed"}
            net = create(self.teacher_.name, weights="random", seed=STUDENT_SEED_OFFSET + int(self.seed), **arch)
            enc = EncoderStudent(net, lay.cls_levels, lay.cls_final_norm)
        return _Students(dec, enc)

    # ------------------------------------------------------------------ training
    def _fit(self, train, *, checkpoint_dir, resume, progress):
        from tqdm.auto import tqdm

        seed_everything(int(self.seed))
        dist = _Dist()
        device = self._device(dist)
        self.teacher_ = self._make_teacher()
        self._check_params(self.teacher_)
        self.teacher_.to(device)
        if self.batch_size % dist.world:
            raise ValueError(f"{self.name}: batch_size {self.batch_size} is not divisible by the "
                             f"{dist.world} processes")
        samples = [s for s in train if s.label == 0 or self.supervised]
        if len(samples) < len(train):
            log.warning("%s: %d anomalous training images ignored (supervised=False)", self.name,
                        len(train) - len(samples))
        if not any(s.label == 0 for s in samples):
            raise ValueError(f"{self.name}.fit: no normal training image (label 0)")
        y_all = torch.tensor([1.0 if s.label == 0 else 0.0 for s in samples])  # paper: 1 = normal

        self.layout_ = make_layout(self.teacher_, self.layers, int(self.num_groups), self._has_encoder,
                                   bool(self.encoder_final_norm))
        lay = self.layout_
        torch.manual_seed(int(self.seed))  # same initial students on every process / run
        students = self._build_students(lay).to(device)
        self.students_ = students
        t_cache = time.perf_counter()
        cache, grid = self._cache_features(samples, device, progress and dist.rank == 0)
        self.grid_ = grid
        t_cache = time.perf_counter() - t_cache

        self._freeze_unused(students, cache, device)
        params_d = [p for p in students.decoder.parameters() if p.requires_grad] if students.decoder is not None else []
        params_e = [p for p in students.encoder.parameters() if p.requires_grad] if students.encoder is not None else []
        opt = StableAdamW([{"params": p} for p in (params_d, params_e) if p], lr=float(self.lr), betas=BETAS,
                          eps=EPS, weight_decay=float(self.weight_decay), amsgrad=True, clip=True)
        model = students
        if dist.on:
            from torch.nn.parallel import DistributedDataParallel as DDP

            if device.type == "cuda" and students.encoder is not None:
                students.encoder = nn.SyncBatchNorm.convert_sync_batchnorm(students.encoder)
            model = DDP(students, device_ids=[device.index] if device.type == "cuda" else None)
        ckpt = Checkpointer(checkpoint_dir, every=max(1, min(500, int(self.iterations) // 10))) \
            if checkpoint_dir is not None else None
        start = 0
        if ckpt is not None and resume:
            got = ckpt.load(modules={"students": students}, optimizers={"opt": opt})
            if got is not None:
                start = got[0]
                log.info("%s: resumed at iteration %d", self.name, start)
        torch.manual_seed(int(self.seed) + 1000 + dist.rank + start)  # dropout stream per process

        total, local = int(self.iterations), int(self.batch_size) // dist.world
        mean = torch.tensor(self._preprocess().mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(self._preprocess().std, device=device).view(1, 3, 1, 1)
        model.train()
        bar = tqdm(range(start, total), desc=f"{self.name} train", disable=not (progress and dist.rank == 0))
        t_train = time.perf_counter()
        for it in bar:
            lr = warm_cosine_lr(it, total, float(self.lr), float(self.lr) * FINAL_LR_RATIO, WARMUP_ITERS)
            for g in opt.param_groups:
                g["lr"] = lr
            idx = _batch_indices(len(samples), int(self.batch_size), it, int(self.seed))
            idx = idx[dist.rank * local:(dist.rank + 1) * local]
            items = [cache.get(int(i)) for i in idx]
            groups = [torch.stack([d[f"g{k}"] for d in items]).to(device) for k in range(len(lay.groups))] \
                if self._has_decoder else None
            images = None
            if self._has_encoder:
                images = (torch.stack([d["img"] for d in items]).to(device).float() / 255.0 - mean) / std
            preds, cls_pred = model(groups, images)
            y = y_all[idx].to(device)
            l_d = l_e = None
            if preds is not None:
                tmaps = [tokens_to_map(t, lay.prefix, grid) for t in groups]
                pmaps = [tokens_to_map(p, lay.prefix, grid) for p in preds]
                l_d = global_cosine_distance(tmaps, pmaps, p=hard_mining_p(it),
                                             gather=dist.gather if dist.on else None)
            if cls_pred is not None:
                cls_t = torch.stack([d["cls"] for d in items]).to(device)
                l_e = cls_distance(cls_t, cls_pred, lay.cls_splits, self.cls_distance)
            loss = self._loss(l_e, l_d, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.grad_clip:
                for ps in (params_d, params_e):
                    if ps:
                        torch.nn.utils.clip_grad_norm_(ps, float(self.grad_clip))
            opt.step()
            if it % 10 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}")
            if ckpt is not None and dist.rank == 0 and ckpt.due(it + 1):
                ckpt.save(it + 1, modules={"students": students}, optimizers={"opt": opt},
                          extra={"layout": lay.to_dict()})
        #: wall-clock seconds of the last fit's phases (not saved): feature caching, training loop
        self.timing_ = {"cache_seconds": t_cache, "train_seconds": time.perf_counter() - t_train,
                        "iterations": total - start, "n_images": len(samples)}
        students.eval()
        cache.close()
        self._calib = [s for s in samples if s.label == 0][:32]

    def _freeze_unused(self, students, cache, device):
        """Parameters no output depends on (a timm model's classifier-side layers such as a
        CNN's conv_head, or the ViT's final norm when it is not a target) are frozen, so the
        optimiser and DistributedDataParallel see only what is trained. Found with one
        forward/backward in eval mode (BatchNorm statistics untouched)."""
        item = cache.get(0)
        groups = [item[f"g{k}"][None].to(device) for k in range(len(self.layout_.groups))] \
            if self._has_decoder else None
        images = item["img"][None].to(device).float() if self._has_encoder else None
        students.eval()
        preds, cls = students(groups, images)
        total = sum(p.sum() for p in preds) if preds is not None else 0
        if cls is not None:
            total = total + cls.sum()
        total.backward()
        for p in students.parameters():
            if p.grad is None:
                p.requires_grad_(False)
            p.grad = None
        students.train()

    def _loss(self, l_e, l_d, y):
        if l_e is not None and l_d is not None:
            if self.fusion == "noisy_or":
                return noisy_or_bce(l_e, l_d, y)
            return (l_e + l_d).mean()
        l = l_e if l_e is not None else l_d
        return single_bce(l, y) if self.supervised else l.mean()

    def _cache_features(self, samples, device, progress):
        """Teacher features of every training image, once (no augmentation in this method)."""
        from tqdm.auto import tqdm

        pre = self._preprocess()
        # beyond the budget, items go to a temporary folder removed by cache.close()
        cache = FeatureCache(int(self.cache_budget_mb) * 1024 ** 2)
        lay = self.layout_
        grid = None
        bs = 8
        for i in tqdm(range(0, len(samples), bs), desc=f"{self.name} teacher features", disable=not progress):
            arrs = [pre.apply_array(s.load_image())[0] for s in samples[i:i + bs]]
            x = torch.stack([pre.normalise(a) for a in arrs]).to(device)
            f = teacher_features(self.teacher_, lay, x, groups=self._has_decoder, cls=self._has_encoder)
            grid = f.get("grid", grid)
            for k in range(len(arrs)):
                item = {}
                if self._has_decoder:
                    item.update({f"g{g}": t[k].cpu() for g, t in enumerate(f["groups"])})
                if self._has_encoder:
                    item["cls"] = f["cls"][k].cpu()
                    item["img"] = torch.from_numpy(arrs[k]).permute(2, 0, 1).contiguous()
                cache.put(i + k, item)
        if cache.spilled:
            log.info("%s: feature cache over budget, %d of %d items on disk", self.name, cache.spilled, len(cache))
        return cache, grid

    def _calibration_scores(self, train):
        normal = getattr(self, "_calib", None)
        if not normal:
            return None
        del self._calib
        return self.predict(normal, progress=False).scores

    # ------------------------------------------------------------------ inference
    def _score_parts(self, x: torch.Tensor):
        """(L_E [B] or None, L_D [B] or None, anomaly map B x S x S or None) for a batch."""
        lay = self.layout_
        st = self.students_
        f = teacher_features(self.teacher_, lay, x, groups=self._has_decoder, cls=self._has_encoder)
        l_e = l_d = amap = None
        if st.decoder is not None:
            grid = f["grid"]
            preds = st.decoder(f["groups"])
            tmaps = [tokens_to_map(t, lay.prefix, grid) for t in f["groups"]]
            pmaps = [tokens_to_map(p, lay.prefix, grid) for p in preds]
            ups = [F.interpolate((1 - F.cosine_similarity(t, p, dim=1))[:, None], size=x.shape[-2:],
                                 mode="bilinear", align_corners=True)[:, 0] for t, p in zip(tmaps, pmaps)]
            amap = _gaussian_5x5(torch.stack(ups).mean(0))
            if self.decoder_score == "global_cosine":
                l_d = global_cosine_distance(tmaps, pmaps)
            else:
                flat = amap.flatten(1)
                k = max(1, int(flat.shape[1] * MAP_TOP_FRACTION))
                l_d = flat.topk(k, dim=1).values.mean(1)
        if st.encoder is not None:
            m = len(lay.cls_splits)
            select = [m - 1] if self.encoder_score == "last_cls" else list(range(m - 1))
            l_e = cls_distance(f["cls"], st.encoder(x), lay.cls_splits, self.cls_distance, select=select)
        return l_e, l_d, amap

    def _predict_batch(self, images):
        pre = self._preprocess()
        x, geoms = pre.batch(images)
        dev = next(self.teacher_.parameters()).device
        self.students_.eval()
        l_e, l_d, amap = self._score_parts(x.to(dev))
        if l_e is not None and l_d is not None:
            if self.fusion == "noisy_or":
                scores = log_sigmoid_prod(l_e.double(), l_d.double())
            else:
                scores = l_e.double() + l_d.double()
        else:
            scores = (l_e if l_e is not None else l_d).double()
        scores = scores.cpu().numpy()
        if amap is None:  # encoder student alone: no spatial output
            maps = [np.full(g.orig_hw, s, np.float32) for g, s in zip(geoms, scores)]
        else:
            maps = [g.restore(m) for g, m in zip(geoms, amap.cpu())]
        return Prediction(scores, maps)

    # ------------------------------------------------------------------ persistence
    def _state_tensors(self):
        return {k: v.detach().cpu() for k, v in self.students_.state_dict().items()}

    def _extra_state(self):
        return {"layout": self.layout_.to_dict(), "grid": list(self.grid_) if self.grid_ else None}

    def _load_state(self, tensors, extra):
        self.layout_ = Layout.from_dict(extra["layout"])
        self.grid_ = tuple(extra["grid"]) if extra.get("grid") else None
        students = self._build_students(self.layout_)
        students.load_state_dict(tensors, strict=True)
        students.to(next(self.teacher_.parameters()).device).eval()
        self.students_ = students


def _batch_indices(n: int, batch: int, it: int, seed: int) -> torch.Tensor:
    """Indices of global batch `it`: a cut of the stream perm_0 + perm_1 + ..., where perm_e is a
    random permutation of range(n) seeded by (seed, e). Stateless, so resuming is exact."""
    start = it * batch
    out = []
    while len(out) < batch:
        e, off = divmod(start + len(out), n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + e))
        out.extend(perm[off:off + batch - len(out)].tolist())
    return torch.tensor(out, dtype=torch.long)


@register_model
class Dinomaly(DualStudent):
    """Dinomaly, the encoder-decoder student alone (table 3, the L_SD-only row): the same
    decoder, loss, optimiser and schedule as `dual_student`, trained on its own mean loss; the
    image score is Dinomaly's mean of the top 1 % of the anomaly map (`decoder_score`)."""

    name = "dinomaly"
    version = 1

    def __init__(self, teacher="dinov2_vitb14_reg", decoder_score="map_top1", supervised=False, layers=None,
                 num_groups=2, decoder_depth=8, dropout=0.2, image_size=392, resize=448, iterations=5000,
                 batch_size=16, lr=2e-3, weight_decay=1e-4, grad_clip=0.1, cache_budget_mb=4096, seed=0,
                 device=None):
        super().__init__(teacher=teacher, students="decoder", decoder_score=decoder_score, supervised=supervised,
                         layers=layers, num_groups=num_groups, decoder_depth=decoder_depth, dropout=dropout,
                         image_size=image_size, resize=resize, iterations=iterations, batch_size=batch_size,
                         lr=lr, weight_decay=weight_decay, grad_clip=grad_clip, cache_budget_mb=cache_budget_mb,
                         seed=seed, device=device)
