"""The contract the four methods share: `Detector` (fit / predict / save / load) and `Prediction`.

Conventions (DEVELOPERS.md, ARCHITECTURE.md):
- Constructor arguments are explicit keyword arguments stored unchanged (scikit-learn style);
  they are checked in `fit`, never in `__init__` (no side effects there).
- Learned state ends in `_` and is set only in `fit`; `fit` returns self. A detector is fitted
  when `fit_info_` is set (the base class sets it after the subclass's `_fit`).
- Higher score = more anomalous. Maps are returned on each image's original geometry.
- `threshold_`: the 99th percentile of the scores of normal training images (or of the
  subclass's `_calibration_scores`), saved with the model. Predictions above it are flagged.
- Saved as a folder: config.json (format, versions, constructor params, teacher spec, learned
  JSON state) + weights.safetensors. Never pickle. Written to a temporary folder and renamed.
"""
from __future__ import annotations

import inspect
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from .. import __version__
from ..data.samples import Sample, as_rgb_array, read_image
from ..errors import ModelFileError, NotFittedError
from ..io import make_temp_dir, read_json, read_tensors, write_json, write_tensors

FORMAT = "distillad-model"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"


@dataclass
class Prediction:
    """scores: [B] (higher = more anomalous); maps: B arrays H_i x W_i float32 on each image's
    original geometry; labels / probs: predicted class ids [B] and probabilities [B, K] for
    detectors that classify (OneN), else None."""

    scores: np.ndarray
    maps: list[np.ndarray]
    labels: np.ndarray | None = None
    probs: np.ndarray | None = None

    def __len__(self):
        return len(self.scores)

    @staticmethod
    def concat(parts: Sequence["Prediction"]) -> "Prediction":
        def cat(attr):
            vals = [getattr(p, attr) for p in parts]
            return None if any(v is None for v in vals) else np.concatenate(vals)
        return Prediction(np.concatenate([p.scores for p in parts]),
                          [m for p in parts for m in p.maps], cat("labels"), cat("probs"))


_REGISTRY: dict[str, type["Detector"]] = {}


def register_model(cls: type["Detector"]) -> type["Detector"]:
    """Class decorator: make a Detector available to `create_model` / `load` by its `name`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no `name`")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        import warnings
        warnings.warn(f"model {cls.name!r} re-registered: {_REGISTRY[cls.name].__qualname__} -> {cls.__qualname__}")
    _REGISTRY[cls.name] = cls
    return cls


def model_names() -> list[str]:
    from . import _import_all
    _import_all()
    return sorted(_REGISTRY)


def create_model(name: str, **params) -> "Detector":
    from . import _import_all
    _import_all()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**params)


def to_images(images: Sequence[Any]) -> list[np.ndarray]:
    """Accept Samples, paths or arrays; return H x W x 3 uint8 arrays."""
    out = []
    for i, im in enumerate(images):
        if isinstance(im, Sample):
            out.append(im.load_image())
        elif isinstance(im, (str, os.PathLike)):
            out.append(read_image(im))
        else:
            out.append(as_rgb_array(im, f"image #{i}"))
    return out


class Detector:
    """Base class. Subclasses implement `_fit`, `_predict_batch`, `_state_tensors`,
    `_load_state` and (optionally) `_extra_state` / `_calibration_scores`.

    A subclass that uses a teacher stores the frozen Teacher in `self.teacher_` during `_fit`
    (use `self._make_teacher()`); the base saves its spec (and its weights when small, random
    or a PDN) and checks on load that the same teacher comes back.
    """

    name: ClassVar[str] = ""
    version: ClassVar[int] = 1       # bump when the meaning of saved tensors changes
    classifies: ClassVar[bool] = False

    # ---------------------------------------------------------------- parameters
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in self._param_names()}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items() if k != "teacher")
        return f"{type(self).__name__}({args})"

    # ---------------------------------------------------------------- teacher
    def _make_teacher(self):
        """`self.teacher` may be a Teacher object, a registry name / teacher file path, or a dict
        {"name": ..., "weights": ..., **config} (what `--param teacher=...` gives on the CLI)."""
        from ..teachers import Teacher, create
        t = self.teacher
        if isinstance(t, Teacher):
            return t.freeze()
        if isinstance(t, dict):  # {"name": ..., "weights": ..., **config}
            t = dict(t)
            return create(t.pop("name"), **t).freeze()
        return create(t).freeze()

    # ---------------------------------------------------------------- fit / predict
    def fit(self, train: Sequence[Sample], *, checkpoint_dir: str | os.PathLike | None = None,
            resume: bool = False, progress: bool = True) -> "Detector":
        """Learn from (normal) training samples. With `checkpoint_dir`, periodic checkpoints are
        written there; `resume=True` continues from the newest one."""
        train = list(train)
        if not train:
            raise ValueError(f"{type(self).__name__}.fit: the training set is empty")
        t0 = time.perf_counter()
        self._fit(train, checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir),
                  resume=resume, progress=progress)
        fit_seconds = time.perf_counter() - t0
        self.fit_info_ = {"n_train": len(train), "fit_seconds": round(fit_seconds, 3)}
        cal = self._calibration_scores(train)
        self.threshold_ = float(np.quantile(cal, 0.99)) if cal is not None and len(cal) else None
        return self

    def _calibration_scores(self, train: Sequence[Sample]) -> np.ndarray | None:
        """Scores of normal images for the threshold: by default up to 32 training images."""
        normal = [s for s in train if s.label == 0][:32]
        return self.predict(normal, progress=False).scores if normal else None

    def is_fitted(self) -> bool:
        return getattr(self, "fit_info_", None) is not None

    def _check_fitted(self, what: str) -> None:
        if not self.is_fitted():
            raise NotFittedError(f"{type(self).__name__}.{what} called before fit (or load)")

    def predict(self, images: Sequence[Any], *, batch_size: int = 8, progress: bool = False) -> Prediction:
        """Scores and maps (on each image's original geometry) for Samples, paths or arrays."""
        self._check_fitted("predict")
        images = list(images)
        if not images:
            return Prediction(np.zeros(0, np.float32), [], None, None)
        parts = []
        from tqdm.auto import tqdm
        batches = range(0, len(images), batch_size)
        for i in tqdm(batches, desc=f"{self.name} predict", disable=not progress, leave=False):
            arrays = to_images(images[i : i + batch_size])
            with torch.no_grad():
                parts.append(self._predict_batch(arrays))
        return Prediction.concat(parts)

    def is_anomalous(self, prediction: Prediction) -> np.ndarray:
        if getattr(self, "threshold_", None) is None:
            raise NotFittedError(f"{type(self).__name__} has no threshold_")
        return prediction.scores > self.threshold_

    # hooks ----------------------------------------------------------------
    def _fit(self, train: list[Sample], *, checkpoint_dir: Path | None, resume: bool, progress: bool) -> None:
        raise NotImplementedError

    def _predict_batch(self, images: list[np.ndarray]) -> Prediction:
        raise NotImplementedError

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        """Learned tensors (students, statistics) to save. The teacher is handled by the base."""
        raise NotImplementedError

    def _extra_state(self) -> dict:
        """Learned JSON-able state besides tensors (e.g. chosen layers)."""
        return {}

    def _load_state(self, tensors: dict[str, torch.Tensor], extra: dict) -> None:
        """Rebuild learned state from `_state_tensors` / `_extra_state` output."""
        raise NotImplementedError

    # ---------------------------------------------------------------- persistence
    #: teachers with more parameters than this are referenced by name, not copied into the file
    EMBED_TEACHER_MAX_PARAMS: ClassVar[int] = 30_000_000

    def save(self, path: str | os.PathLike) -> Path:
        """Write config.json + weights.safetensors into folder `path`, atomically."""
        self._check_fitted("save")
        path = Path(path)
        params = {k: v for k, v in self.get_params().items() if k != "teacher"}
        tensors = dict(self._state_tensors())
        teacher = getattr(self, "teacher_", None)
        tspec = None
        if teacher is not None:
            tspec = teacher.spec()
            embed = tspec["weights"] == "random" or tspec["num_parameters"] <= self.EMBED_TEACHER_MAX_PARAMS \
                or tspec["kind"] == "pdn"
            tspec["embedded"] = bool(embed)
            if embed:
                tensors.update({f"__teacher__.{k}": v for k, v in teacher.state_dict().items()})
        config = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "distillad_version": __version__,
            "model": self.name, "model_version": self.version, "params": params,
            "teacher": tspec, "extra": self._extra_state(),
            "fit_info": self.fit_info_, "threshold": getattr(self, "threshold_", None),
            "torch_version": torch.__version__,
        }
        tmp = make_temp_dir(path)
        try:
            write_tensors(tmp / WEIGHTS_FILE, tensors, {"model": self.name})
            write_json(tmp / CONFIG_FILE, config)
            old = None
            if path.exists():
                old = path.with_name(f".{path.name}.old-{os.getpid()}")
                os.replace(path, old)
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, teacher=None, weights: str | None = None) -> "Detector":
        """Load a saved model. `teacher` (a Teacher object) or `weights` (a teacher weights
        file) supply the teacher when it was not embedded; either way its fingerprint must match
        the one recorded at save time."""
        path = Path(path)
        if path.is_dir():
            cfg_path = path / CONFIG_FILE
        else:
            raise ModelFileError(f"{path}: not a saved distillad model folder")
        cfg = read_json(cfg_path)
        if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
            raise ModelFileError(f"{cfg_path}: not a distillad model (format field is {cfg.get('format') if isinstance(cfg, dict) else None!r})")
        if cfg.get("format_version") != FORMAT_VERSION:
            raise ModelFileError(f"{cfg_path}: file format version {cfg.get('format_version')} but this "
                                 f"distillad ({__version__}) reads version {FORMAT_VERSION}")
        from . import _import_all
        _import_all()
        name = cfg.get("model")
        klass = _REGISTRY.get(name)
        if klass is None:
            raise ModelFileError(f"{cfg_path}: unknown model {name!r}")
        if cls is not Detector and klass is not cls:
            raise ModelFileError(f"{cfg_path}: holds a {name!r} model, not {cls.name!r}")
        if cfg.get("model_version") != klass.version:
            raise ModelFileError(f"{cfg_path}: {name} model version {cfg.get('model_version')} (saved by distillad "
                                 f"{cfg.get('distillad_version')}) but this distillad ({__version__}) reads version {klass.version}")
        tensors = read_tensors(path / WEIGHTS_FILE)
        tspec = cfg.get("teacher")
        params = dict(cfg["params"])
        tobj = None
        if tspec is not None:
            tobj = _restore_teacher(tspec, tensors, teacher, weights, cfg_path)
            params["teacher"] = tobj
        tensors = {k: v for k, v in tensors.items() if not k.startswith("__teacher__.")}
        try:
            det = klass(**params)
        except TypeError as e:
            raise ModelFileError(f"{cfg_path}: parameters do not fit {klass.__name__} ({e})") from None
        if tobj is not None:
            det.teacher_ = tobj
        try:
            det._load_state(tensors, cfg.get("extra") or {})
        except (KeyError, RuntimeError, ValueError) as e:
            raise ModelFileError(f"{path / WEIGHTS_FILE}: weights do not fit the {name} model described in config.json ({e})") from None
        det.fit_info_ = cfg.get("fit_info") or {"loaded": True}
        det.threshold_ = cfg.get("threshold")
        return det


def _restore_teacher(tspec: dict, tensors: dict, teacher, weights, cfg_path: Path):
    from ..teachers import Teacher, create
    if teacher is not None:
        if not isinstance(teacher, Teacher):
            teacher = create(teacher)
        t = teacher
    elif tspec.get("embedded"):
        t = create(tspec["name"], weights="random", **tspec.get("config", {}))
        sd = {k[len("__teacher__."):]: v for k, v in tensors.items() if k.startswith("__teacher__.")}
        try:
            t.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise ModelFileError(f"{cfg_path}: embedded teacher weights do not fit {tspec['name']} ({e})") from None
        t.weights_source = tspec.get("weights", "embedded")
        t._fingerprint_cache = None
    else:
        t = create(tspec["name"], weights=weights, **tspec.get("config", {}))
    t.freeze()
    if t.name != tspec["name"] or t.fingerprint() != tspec["fingerprint"]:
        raise ModelFileError(
            f"{cfg_path}: model was trained with teacher {tspec['name']} (weights {tspec.get('weights')}, "
            f"fingerprint {tspec['fingerprint']}) but the teacher given is {t.name} (weights {t.weights_source}, "
            f"fingerprint {t.fingerprint()}); a student only works with the exact teacher it imitated")
    return t


def load(path: str | os.PathLike, **kw) -> Detector:
    """Load any saved distillad model (see `Detector.load`)."""
    return Detector.load(path, **kw)
