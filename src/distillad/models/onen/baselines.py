"""CNN baselines of tables 5-14: a CNN classifier (the paper: ResNet-34 / ResNet-152; here any
timm CNN, offline default EfficientNet-Lite2) trained like OneN's teacher, localising with a
class activation map from the `grad-cam` library (pytorch_grad_cam): Grad-CAM, Grad-CAM++,
Score-CAM or LayerCAM "applied to the final convolutional layer" (section 4).

Left open by the paper, decided here:
- the CAM target is the predicted class (the library's default);
- "final convolutional layer" = the last feature stage of the timm model (`feature_info[-1]`;
  `target_layer` names another module);
- the library min-max scales every CAM to [0, 1], so the paper's image score (max of the map)
  would be 1 for every image: `score="defect_prob"` (1 - p(normal), default here) or
  `score="map_max"` (faithful, uninformative) are offered.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...data.transforms import Preprocess
from ...training import seed_everything
from ..base import Detector, Prediction, register_model
from .data import Augment, load_training_arrays
from .detector import PROTOCOLS, class_table, teacher_name_and_weights
from .teacher import CNNTeacher
from .training import run_training

CAMS = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "scorecam": "ScoreCAM", "layercam": "LayerCAM"}


@register_model
class CNNCam(Detector):
    """CNN classifier + CAM (tables 6, 8, 10, 12, 14: "ResNet + GradCAM / GradCAM++ / ScoreCAM / LayerCAM")."""

    name = "cnn_cam"
    classifies = True
    version = 1

    def __init__(self, teacher="tf_efficientnet_lite2", *, teacher_weights=None, cam: str = "gradcam++",
                 target_layer: str | None = None, image_size: int = 224, score: str = "defect_prob",
                 optimizer: str = "adam", lr: float = 4e-4, weight_decay: float = 0.05, batch_size: int = 128,
                 epochs: int = 200, patience: int = 35, augment: bool = True, protocol: str = "tr-aw",
                 seed: int = 0):
        self.teacher = teacher
        self.teacher_weights = teacher_weights
        self.cam = cam
        self.target_layer = target_layer
        self.image_size = image_size
        self.score = score
        self.optimizer = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.epochs = epochs
        self.patience = patience
        self.augment = augment
        self.protocol = protocol
        self.seed = seed

    def _fit(self, train, *, checkpoint_dir, resume, progress):
        if self.cam not in CAMS:
            raise ValueError(f"cam must be one of {', '.join(CAMS)}, got {self.cam!r}")
        if self.score not in ("map_max", "defect_prob"):
            raise ValueError(f"score must be 'map_max' or 'defect_prob', got {self.score!r}")
        if self.protocol not in PROTOCOLS or self.protocol == "t-aw":
            raise ValueError("cnn_cam supports protocol='tr-aw' only")
        seed_everything(self.seed)
        k, names, normal = class_table(train)
        if self.score == "defect_prob" and normal is None:
            raise ValueError("score='defect_prob' needs a normal class (label-0 samples) in training")
        from ...teachers import build_timm
        name, weights = teacher_name_and_weights(self.teacher, self.teacher_weights)
        model = CNNTeacher(build_timm(name, weights=weights, num_classes=k), k, mask_branch=False)
        arrays = load_training_arrays(train, self.image_size, "none")
        info = run_training(phase="cnn", module=model, loss_fn=lambda m, x, masks, y, has, g: F.cross_entropy(m(x), y),
                            arrays=arrays, normalise=Preprocess(self.image_size).normalise, optimizer=self.optimizer,
                            lr=self.lr, weight_decay=self.weight_decay, batch_size=self.batch_size,
                            epochs=self.epochs, patience=self.patience, augment=Augment() if self.augment else None,
                            seed=self.seed, progress=progress, checkpoint_dir=checkpoint_dir, resume=resume)
        self.model_ = model.eval()
        self.arch_ = name
        self.num_classes_, self.class_names_, self.normal_class_ = k, names, normal
        self.training_ = {"cnn": info, "weights": str(weights) if weights is not None else "offline default"}

    def _layer(self):
        bb = self.model_.backbone
        name = self.target_layer or bb.feature_info[-1]["module"]
        return bb.get_submodule(name)

    def _predict_batch(self, images):
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        x, geoms = Preprocess(self.image_size).batch(images)
        self.model_.eval()
        probs = self.model_(x).softmax(1)
        labels = probs.argmax(1)
        cam_cls = getattr(pytorch_grad_cam, CAMS[self.cam])
        with torch.enable_grad(), cam_cls(model=self.model_, target_layers=[self._layer()]) as cam:
            if hasattr(cam, "batch_size"):
                cam.batch_size = 16
            maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in labels])
        maps = np.nan_to_num(np.asarray(maps, np.float32))
        if self.score == "map_max":
            scores = maps.reshape(len(maps), -1).max(1)
        else:
            scores = (1.0 - probs[:, self.normal_class_]).numpy()
        return Prediction(scores.astype(np.float32), [g.restore(m) for g, m in zip(geoms, maps)],
                          labels.numpy(), probs.numpy().astype(np.float32))

    def complexity(self, image_size: int | None = None) -> dict:
        """Parameters and FLOPs of the CNN classifier's forward pass per image (`common.count_flops`);
        the CAM's own work (a backward pass for Grad-CAM, one forward per channel for Score-CAM)
        comes on top and is not counted."""
        from ..common import count_flops
        self._check_fitted("complexity")
        size = int(image_size or self.image_size)
        flops = count_flops(self.model_, torch.empty(1, 3, size, size))
        return {"image_size": size, "params_student": sum(p.numel() for p in self.model_.parameters()),
                "params_teacher": 0, "flops_student": flops, "flops_inference": flops,
                "gmacs_inference": round(flops / 2e9, 3), "cam_not_counted": self.cam}

    def _state_tensors(self):
        return {f"cnn.{k}": v for k, v in self.model_.state_dict().items()}

    def _extra_state(self):
        return {"arch": self.arch_, "num_classes": self.num_classes_, "class_names": self.class_names_,
                "normal_class": self.normal_class_, "training": self.training_}

    def _load_state(self, tensors, extra):
        from ...teachers import build_timm
        self.arch_ = extra["arch"]
        self.num_classes_ = int(extra["num_classes"])
        self.class_names_ = list(extra["class_names"])
        self.normal_class_ = extra["normal_class"]
        self.training_ = extra.get("training", {})
        self.teacher = self.arch_
        model = CNNTeacher(build_timm(self.arch_, weights="random", num_classes=self.num_classes_), self.num_classes_)
        model.load_state_dict({k[len("cnn."):]: v for k, v in tensors.items() if k.startswith("cnn.")})
        self.model_ = model.eval()
