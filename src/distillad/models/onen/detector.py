"""OneN (Coscia et al., "OneN: Guided attention for natively-explainable anomaly detection"):
one DeiT-style ViT that classifies (CLS + DIST heads), localises (attention rollout) and detects
(max of the rollout map), trained by hard distillation from a CNN classifier plus the
progressive masked focal loss on its attention maps.

Pieces and the paper sections they follow:
- teacher (section 3 "Teacher Network", `teacher.py`): a CNN over the training classes, CE,
  optional Mask-CNN late fusion when annotations are used; trained first, then frozen.
- student (section 3 "Student Network", `vit.py`): S / B / L = 3 / 8 / 12 layers of DeiT-B.
- loss (eqs. 3, 7, 8): (1 - a) CE(cls, y) + a CE(dist, argmax teacher) + beta PMFL (`pmfl.py`).
  eq. 3 writes both CE terms on the CLS logits; DeiT's hard distillation (which the paper says it
  follows, and METHODS.md) puts the teacher term on the DIST head: we do that.
- localisation (section 3, section 4 "Implementation Details", `rollout.py`).
- training (section 4): `training.py`; data-side options (input settings, background class,
  weak boxes): `data.py`.

Detection score. The paper scores an image by the maximum of its anomaly map (section 4,
"Detection and Localization Tasks"): `score="map_max"` (default) takes the maximum of the *raw*
rollout map (the CLS row's attention mass on the most attended patch; a per-image max-normalised
map would give every image the score 1). The classifier gives a second, usually stronger score:
`score="defect_prob"` = 1 - p(normal class) from the averaged CLS/DIST heads (needs a normal
class, i.e. input settings with good images: STD+G, STD+G+BG, B, B+BG). `Prediction.probs` /
`labels` are always filled, so both can be compared from one model.

Teacher (`teacher`): a timm CNN name (trained here first, `teacher_epochs`), a distillad Teacher
(its architecture and weights), or the folder of a saved `cnn_cam` model: that trained classifier
is then the teacher as it is (the same CNN serves as the CNN + CAM baseline; no Mask-CNN).

Supervision (`supervision`): "none" (the paper's x), "boxes" (weak: boxes of the mask components,
or the given boxes, e.g. DeepPCB) or "masks" (fine-grained; boxes when a sample has only boxes).
The teacher's Mask-CNN branch is used whenever supervision is not "none" and
`teacher_mask_branch` is set (the paper's OneN rows with masks).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...data.transforms import Preprocess
from ...training import seed_everything
from ..base import Detector, Prediction, register_model
from .data import Augment, load_training_arrays
from .pmfl import patch_targets, pmfl_loss
from .rollout import normalize_maps, rollout_maps
from .training import run_training
from .vit import VARIANT_DEPTH, DistilledViT

log = logging.getLogger(__name__)

SUPERVISION = ("none", "boxes", "masks")
PROTOCOLS = ("tr-aw", "t-aw")
T_AW_FLAG = "T-AW: model chosen on the test set (optimistic upper bound, not a fair estimate)"


def teacher_name_and_weights(teacher, teacher_weights):
    """`teacher` may be a timm CNN name or a distillad Teacher (its name and weights are reused);
    (a saved cnn_cam folder is handled by `_trained_teacher`)."""
    from ...teachers import Teacher
    if isinstance(teacher, Teacher):
        w = teacher_weights
        if w is None and teacher.weights_source == "random":
            w = "random"
        return teacher.name, w
    if not isinstance(teacher, str) or not teacher:
        raise ValueError(f"teacher must be a timm CNN name or a Teacher, got {teacher!r}")
    return teacher, teacher_weights


def _is_saved_model(teacher) -> bool:
    return isinstance(teacher, (str, Path)) and (Path(teacher) / "config.json").is_file()


def _trained_teacher(path, num_classes: int):
    """A saved `cnn_cam` model folder as an already trained teacher (one CNN classifier shared
    by several OneN runs and by the CNN + CAM baseline; no Mask-CNN branch)."""
    from ...errors import ModelFileError
    from ..base import load
    det = load(path)
    if det.name != "cnn_cam":
        raise ModelFileError(f"{path}: a OneN teacher folder must hold a saved cnn_cam model, not {det.name!r}")
    if det.num_classes_ != num_classes:
        raise ModelFileError(f"{path}: the saved CNN classifies {det.num_classes_} classes but the training "
                             f"set has {num_classes}")
    return det.model_


def class_table(train) -> tuple[int, list[str], int | None]:
    """(number of classes, class names by id, the id of the normal class or None)."""
    ids = sorted({int(s.class_id) for s in train})
    if ids[0] < 0:
        raise ValueError("OneN.fit: negative Sample.class_id")
    k = ids[-1] + 1
    names = [""] * k
    for s in train:
        if not names[s.class_id]:
            names[s.class_id] = "good" if s.label == 0 else s.defect_type
    normal = sorted({int(s.class_id) for s in train if s.label == 0})
    if len(normal) > 1:
        raise ValueError(f"OneN.fit: normal (label 0) samples carry several class ids {normal}; expected one")
    if k < 2:
        raise ValueError("OneN.fit: a classifier needs at least two classes in the training set "
                         "(e.g. normal and defective: use Sample.class_id, 0 = normal)")
    return k, names, (normal[0] if normal else None)


@register_model
class OneN(Detector):
    """OneN-S/B/L. See the module docstring; docs/onen.md for measured numbers."""

    name = "onen"
    classifies = True
    version = 1
    _distill = True  # the plain-ViT baseline switches the teacher / DIST token off

    def __init__(self, teacher="tf_efficientnet_lite2", *, teacher_weights=None, variant: str = "S",
                 image_size: int = 224, patch_size: int = 16, embed_dim: int = 768, num_heads: int = 12,
                 student_weights=None, supervision: str = "masks", teacher_mask_branch: bool = True,
                 alpha_kd: float = 0.5, beta: float = 7.0, p_min: float = 0.1, p_max: float = 1.0,
                 focal_alpha: float = 1.0, focal_gamma: float = 2.0, progressive: bool = True,
                 alpha_roll: float = 0.5, discard_ratio: float = 0.75, head_fusion: str = "max",
                 map_normalization: str = "max", score: str = "map_max", optimizer: str = "adam",
                 lr: float = 4e-4, weight_decay: float = 0.05, batch_size: int = 128, epochs: int = 200,
                 patience: int = 35, teacher_epochs: int | None = None, augment: bool = True,
                 protocol: str = "tr-aw", seed: int = 0):
        self.teacher = teacher
        self.teacher_weights = teacher_weights
        self.variant = variant
        self.image_size = image_size
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.student_weights = student_weights
        self.supervision = supervision
        self.teacher_mask_branch = teacher_mask_branch
        self.alpha_kd = alpha_kd
        self.beta = beta
        self.p_min = p_min
        self.p_max = p_max
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.progressive = progressive
        self.alpha_roll = alpha_roll
        self.discard_ratio = discard_ratio
        self.head_fusion = head_fusion
        self.map_normalization = map_normalization
        self.score = score
        self.optimizer = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.epochs = epochs
        self.patience = patience
        self.teacher_epochs = teacher_epochs
        self.augment = augment
        self.protocol = protocol
        self.seed = seed

    # ---------------------------------------------------------------- helpers
    def _check_params(self):
        if self.variant not in VARIANT_DEPTH:
            raise ValueError(f"variant must be one of {', '.join(VARIANT_DEPTH)} (3/8/12 layers), got {self.variant!r}")
        if self.supervision not in SUPERVISION:
            raise ValueError(f"supervision must be one of {SUPERVISION}, got {self.supervision!r}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.score not in ("map_max", "defect_prob"):
            raise ValueError(f"score must be 'map_max' or 'defect_prob', got {self.score!r}")
        if self.map_normalization not in ("max", "none"):
            raise ValueError(f"map_normalization must be 'max' or 'none', got {self.map_normalization!r}")
        if not 0.0 <= self.alpha_kd <= 1.0:
            raise ValueError(f"alpha_kd must lie in [0, 1], got {self.alpha_kd}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")

    @property
    def _prefix(self) -> int:
        return 2 if self._distill else 1

    def _preprocess(self) -> Preprocess:
        return Preprocess(self.image_size, mode="resize")

    def _new_student(self, num_classes: int, image_size: int | None = None) -> DistilledViT:
        return DistilledViT(num_classes, depth=VARIANT_DEPTH[self.variant], img_size=image_size or self.image_size,
                            patch_size=self.patch_size, embed_dim=self.embed_dim, num_heads=self.num_heads,
                            distill_token=self._distill)

    # ---------------------------------------------------------------- fit
    def fit_test_aware(self, train, test, **kw) -> "OneN":
        """The T-AW protocol: like `fit`, but the student weights are those of the epoch with the
        best accuracy on `test`. An optimistic upper bound (the paper's T-AW), never a fair
        estimate: the model records it (`selection_` says so) and a warning is logged."""
        if self.protocol != "t-aw":
            raise ValueError("fit_test_aware needs protocol='t-aw' (the default 'tr-aw' never sees test data)")
        self._selection_set = list(test)
        try:
            return self.fit(train, **kw)
        finally:
            self._selection_set = None

    def _fit(self, train, *, checkpoint_dir, resume, progress):
        self._check_params()
        if self.protocol == "t-aw" and getattr(self, "_selection_set", None) is None:
            raise ValueError("protocol='t-aw' selects the model on a test set: call fit_test_aware(train, test)")
        seed_everything(self.seed)
        k, names, normal = class_table(train)
        if self.score == "defect_prob" and normal is None:
            raise ValueError("score='defect_prob' needs a normal class in training (label-0 samples), e.g. "
                             "input setting STD+G or B; STD / STD+BG have none")
        supervision = self.supervision if self._distill else "none"
        arrays = load_training_arrays(train, self.image_size, supervision)
        if supervision != "none" and not arrays.has_target[[s.label != 0 for s in train]].any():
            log.warning("onen: supervision=%r but no defective training sample has a mask or boxes; "
                        "PMFL only sees normal images", supervision)
        pre = self._preprocess()
        aug = Augment() if self.augment else None
        common = dict(arrays=arrays, normalise=pre.normalise, optimizer=self.optimizer, lr=self.lr,
                      weight_decay=self.weight_decay, batch_size=self.batch_size, patience=self.patience,
                      augment=aug, seed=self.seed, progress=progress, checkpoint_dir=checkpoint_dir, resume=resume)
        info: dict = {"protocol": self.protocol}

        teacher = None
        if self._distill and _is_saved_model(self.teacher):
            teacher = _trained_teacher(self.teacher, k)
            info["teacher"] = {"name": str(self.teacher), "mask_branch": False,
                               "trained": "reused from a saved cnn_cam model (not retrained)"}
        elif self._distill:
            from .teacher import build_teacher
            tname, tweights = teacher_name_and_weights(self.teacher, self.teacher_weights)
            use_mask = supervision != "none" and bool(self.teacher_mask_branch)
            teacher = build_teacher(tname, tweights, k, use_mask)

            def teacher_loss(m, x, masks, y, has, gen):
                return F.cross_entropy(m(x, masks[:, None] if use_mask else None), y)

            tinfo = run_training(phase="teacher", module=teacher, loss_fn=teacher_loss,
                                 epochs=self.teacher_epochs or self.epochs, **common)
            info["teacher"] = {"name": tname, "weights": str(tweights) if tweights is not None else "offline default",
                               "mask_branch": use_mask, **tinfo}
        if teacher is not None:
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)

        student = self._new_student(k)
        if self.student_weights:
            info["student_init"] = {"file": str(self.student_weights),
                                    "random_init": student.load_pretrained(self.student_weights)}
        grid = student.grid

        def student_loss(m, x, masks, y, has, gen):
            cls, dist, attns = m(x)
            if teacher is None:
                loss = F.cross_entropy(cls, y)
            else:
                with torch.no_grad():
                    t_lab = teacher(x, masks[:, None] if teacher.mask_branch is not None else None).argmax(1)
                loss = (1 - self.alpha_kd) * F.cross_entropy(cls, y) + self.alpha_kd * F.cross_entropy(dist, t_lab)
            if supervision != "none" and self.beta > 0 and bool(has.any()):
                targets = patch_targets(masks[has], grid)
                loss = loss + self.beta * pmfl_loss(
                    [a[has] for a in attns], targets, num_prefix_tokens=self._prefix, p_min=self.p_min,
                    p_max=self.p_max, alpha=self.focal_alpha, gamma=self.focal_gamma, head_fusion=self.head_fusion,
                    generator=gen, progressive=self.progressive)
            return loss

        select = None
        if self.protocol == "t-aw":
            log.warning("onen: %s", T_AW_FLAG)
            sel = self._selection_set
            sel_x = [s.load_image() for s in sel]
            sel_y = np.array([s.class_id for s in sel])

            def select(m):
                self.student_ = m
                with torch.no_grad():
                    labels = np.concatenate([self._forward(sel_x[i : i + 32])[0].argmax(1).numpy()
                                             for i in range(0, len(sel_x), 32)])
                return float((labels == sel_y).mean())

        info["student"] = run_training(phase="student", module=student, loss_fn=student_loss,
                                       epochs=self.epochs, select=select, **common)
        self.student_ = student
        self.num_classes_ = k
        self.class_names_ = names
        self.normal_class_ = normal
        self.training_ = info
        self.selection_ = T_AW_FLAG if self.protocol == "t-aw" else "TR-AW: model chosen on the training loss only"

    # ---------------------------------------------------------------- predict
    def _forward(self, images):
        x, geoms = self._preprocess().batch(images)
        cls, dist, attns = self.student_(x)
        probs = DistilledViT.inference_logits(cls, dist).softmax(dim=1)
        raw = rollout_maps(attns, self.student_.grid, num_prefix_tokens=self._prefix, alpha=self.alpha_roll,
                           discard_ratio=self.discard_ratio, head_fusion=self.head_fusion)
        return probs, raw, geoms

    def _predict_batch(self, images):
        self.student_.eval()
        probs, raw, geoms = self._forward(images)
        if self.score == "map_max":
            scores = raw.flatten(1).amax(dim=1)
        else:
            scores = 1.0 - probs[:, self.normal_class_]
        maps = normalize_maps(raw, self.map_normalization)
        return Prediction(scores.numpy().astype(np.float32), [g.restore(m) for g, m in zip(geoms, maps)],
                          probs.argmax(1).numpy(), probs.numpy().astype(np.float32))

    def explain(self, images) -> dict:
        """Per-image class probabilities and the raw (un-normalised) rollout maps on the patch grid,
        for inspection (`predict` returns the maps on the original geometry)."""
        self._check_fitted("explain")
        from ..base import to_images
        with torch.no_grad():
            probs, raw, _ = self._forward(to_images(images))
        return {"probs": probs.numpy(), "rollout": raw.numpy(), "class_names": self.class_names_}

    def complexity(self, image_size: int | None = None) -> dict:
        """Table 3: parameters and FLOPs per image of what runs at inference, the student ViT
        alone (the CNN teacher only trains it). FLOPs from `common.count_flops` (1 multiply-add =
        2 FLOPs; the paper's "FLOPs" lie between our MACs and FLOPs, docs/onen.md); the rollout's
        few small matrix products are not counted."""
        from ..common import count_flops
        self._check_fitted("complexity")
        size = int(image_size or self.image_size)
        student = self.student_ if size == self.image_size else self._new_student(self.num_classes_, size)
        flops = count_flops(student, torch.empty(1, 3, size, size))
        return {"image_size": size, "params_student": sum(p.numel() for p in self.student_.parameters()),
                "params_teacher": 0, "flops_student": flops, "flops_inference": flops,
                "gmacs_inference": round(flops / 2e9, 3)}

    # ---------------------------------------------------------------- persistence
    def _state_tensors(self):
        return {f"student.{k}": v for k, v in self.student_.state_dict().items()}

    def _extra_state(self):
        return {"num_classes": self.num_classes_, "class_names": self.class_names_,
                "normal_class": self.normal_class_, "training": self.training_, "selection": self.selection_,
                "teacher": str(self.teacher) if isinstance(self.teacher, (str, Path)) else getattr(self.teacher, "name", None)}

    def _load_state(self, tensors, extra):
        self.num_classes_ = int(extra["num_classes"])
        self.class_names_ = list(extra["class_names"])
        self.normal_class_ = extra["normal_class"]
        self.training_ = extra.get("training", {})
        self.selection_ = extra.get("selection", "")
        if extra.get("teacher") is not None:  # the base does not save `teacher` for us (not a frozen Teacher)
            self.teacher = extra["teacher"]
        student = self._new_student(self.num_classes_)
        student.load_state_dict({k[len("student."):]: v for k, v in tensors.items() if k.startswith("student.")})
        self.student_ = student.eval()


@register_model
class ViTRollout(OneN):
    """Baseline of tables 5-14, "ViT-B-16 (S/B/L)": the same ViT without distillation token,
    teacher or PMFL, trained with cross-entropy only; localisation by the same rollout."""

    name = "vit_rollout"
    _distill = False

    def __init__(self, *, variant: str = "S", image_size: int = 224, patch_size: int = 16, embed_dim: int = 768,
                 num_heads: int = 12, student_weights=None, alpha_roll: float = 0.5, discard_ratio: float = 0.75,
                 head_fusion: str = "max", map_normalization: str = "max", score: str = "map_max",
                 optimizer: str = "adam", lr: float = 4e-4, weight_decay: float = 0.05, batch_size: int = 128,
                 epochs: int = 200, patience: int = 35, augment: bool = True, protocol: str = "tr-aw",
                 seed: int = 0, teacher=None):
        super().__init__(None, variant=variant, image_size=image_size, patch_size=patch_size,
                         embed_dim=embed_dim, num_heads=num_heads, student_weights=student_weights,
                         supervision="none", alpha_roll=alpha_roll, discard_ratio=discard_ratio,
                         head_fusion=head_fusion, map_normalization=map_normalization, score=score,
                         optimizer=optimizer, lr=lr, weight_decay=weight_decay, batch_size=batch_size,
                         epochs=epochs, patience=patience, augment=augment, protocol=protocol, seed=seed)
        self.teacher = teacher  # accepted (and ignored) so `distillad bench --teacher` works for every model
