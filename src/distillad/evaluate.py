"""Evaluate a fitted detector on a test set: metrics at ground-truth resolution, speed, memory,
and the files a user reads (metrics.json, metrics.md, report.html).

    from distillad.evaluate import evaluate
    result = evaluate(model, split, "runs/hz/eval")     # split: a Split or a list of test Samples

What is measured, and how (so that numbers can be trusted and compared):
- Geometry. `Detector.predict` returns every map on its image's original geometry (padding
  removed, crop undone). Each map must have exactly its mask's shape; a map of another shape is
  an error naming the image. Masks are never resized.
- Metrics: `distillad.metrics.compute_metrics` over the whole test set ("metrics", pooled), and
  per category when the test set has several ("per_category", plus their unweighted "mean",
  the figure multi-class papers report). Image metrics use every test image. Pixel metrics use
  the images that have pixel ground truth: normal images (all-normal masks), masks, or boxes
  (then the metrics are box-level, and the notes say so). Anomalous images without any pixel
  ground truth (semantic anomaly sets) are left out of the pixel metrics; when no anomalous
  image has one, pixel metrics are skipped (absent), never reported as 0.
- Undefined metrics (e.g. AUROC on a test set with one class) are `null` in metrics.json and
  the `notes` list says which and why.
- Speed is end to end: `detector.predict` on decoded test images held in memory, so it
  includes preprocessing, the forward pass, the anomaly-map computation and the restoration of
  each map to the original image size; it excludes reading and decoding files. Warm-up: 2
  batches of 8. Batch 1: median wall time per image over up to `max_speed_images` images.
  Batch 8: images / total wall time over the same images (cycled up to at least 8).
  The number of torch threads is recorded beside the times.
- Memory: peak resident set size (RSS) of the whole process during the timed predictions. On
  Linux the kernel's peak counter (VmHWM) is reset just before timing (/proc/self/clear_refs),
  so the peak belongs to inference, not to earlier training; "peak_rss_delta_mb" is that peak
  minus the RSS just before timing (what inference adds on top of the loaded model). Where
  the counter cannot be reset, the lifetime peak (ru_maxrss) is reported and
  "memory_measure" says so. With CUDA, the peak allocated CUDA memory is added.
- Timed images: the first `max_speed_images` test images, real sizes, decoded beforehand.
- Heatmaps in report.html share one colour range for every image (`report.display_range`:
  median of the normal test maps -> largest map value); per-image min-max would make every
  normal image look anomalous. Captions say whether `threshold_` flags each image.
"""
from __future__ import annotations

import io
import logging
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .data.samples import Sample, Split
from .errors import DistilladError, NotFittedError

log = logging.getLogger(__name__)

#: image metric keys start with this; everything else compute_metrics returns is pixel-level
IMAGE_PREFIX = "image_"
#: overlays per group of cases in the HTML report, and the range of their longest side there (pixels)
N_CASES = 3
CASE_MAX_SIDE = 384
CASE_MIN_SIDE = 128
#: number of categories drawn on the image-level ROC plot (besides the pooled curve)
MAX_ROC_CATEGORIES = 12
SPEED_WHAT = ("end to end: detector.predict on decoded test images held in memory, including "
              "preprocessing, the forward pass, the anomaly maps and their restoration to the "
              "original image size; excluding file reading and decoding; after a warm-up of 2 batches of 8")


class EvaluationError(DistilladError, ValueError):
    """A detector's output does not fit the test set (wrong map shape, missing scores)."""


# --------------------------------------------------------------------------- entry point
def evaluate(detector, split_or_test_samples: Split | Sequence[Sample], out_dir: str | os.PathLike | None = None,
             *, speed: bool = True, report: bool = True, batch_size: int = 8, progress: bool = True,
             max_speed_images: int = 16) -> dict:
    """Run a fitted `detector` on the test set, compute metrics, time it, write the reports.

    split_or_test_samples: a `Split` (its `test` part is used) or a sequence of test Samples.
    out_dir: where metrics.json, metrics.md and (with `report`) report.html are written; each
    file is written atomically, and only after everything was computed, so an error leaves
    no partial output. speed: measure latency / throughput / memory. batch_size: batch of the
    evaluation pass (the speed measurement always uses batches of 1 and 8).
    Returns the result dict that metrics.json holds (see the module docstring).
    """
    if not (hasattr(detector, "is_fitted") and detector.is_fitted()):
        raise NotFittedError(f"evaluate: {type(detector).__name__} is not fitted (call fit or load first)")
    if isinstance(split_or_test_samples, Split):
        name, samples, class_names = split_or_test_samples.name, list(split_or_test_samples.test), \
            tuple(split_or_test_samples.class_names)
    else:
        name, samples, class_names = "<test samples>", list(split_or_test_samples), ()
    if not samples:
        raise ValueError(f"evaluate: the test set of {name} is empty")
    if batch_size < 1 or max_speed_images < 1:
        raise ValueError("evaluate: batch_size and max_speed_images must be >= 1")

    run = _predict_all(detector, samples, batch_size, progress)
    labels = np.array([s.label for s in samples], dtype=int)
    notes: list[str] = []
    overall, n_notes = _metrics_for(run, labels, range(len(samples)))
    notes += n_notes

    cats = sorted({s.category for s in samples})
    per_category = None
    if len(cats) > 1:
        per_category = {}
        for c in cats:
            idx = [i for i, s in enumerate(samples) if s.category == c]
            per_category[c], c_notes = _metrics_for(run, labels, idx)
            notes += [f"category {c}: {n}" for n in c_notes]
        per_category["mean"], m_notes = _category_mean({c: per_category[c] for c in cats})
        notes += m_notes

    classification = _classification(detector, run, samples, class_names)
    n_box = sum(k == "boxes" and lab == 1 for k, lab in zip(run["gt_kind"], labels))
    n_mask = sum(k == "mask" and lab == 1 for k, lab in zip(run["gt_kind"], labels))
    if n_box:
        notes.append(f"{n_box} anomalous test image(s) have bounding boxes and no mask: their pixel ground truth is "
                     f"the filled boxes, so pixel metrics are box-level for them (a defect smaller than its box "
                     f"counts its box's normal pixels as anomalous)")
    gt_desc = ("none" if not (n_box or n_mask) else "masks" if not n_box else "boxes (box-level)" if not n_mask
               else f"masks ({n_mask} images) and boxes ({n_box} images, box-level)")

    result: dict[str, Any] = {
        "model": getattr(detector, "name", type(detector).__name__),
        "params": _jsonable_params(detector),
        "teacher": _teacher_spec(detector),
        "dataset": name,
        "n_test": len(samples),
        "n_test_normal": int((labels == 0).sum()),
        "n_test_anomalous": int((labels == 1).sum()),
        "pixel_ground_truth": gt_desc,
        "metrics": overall,
    }
    if per_category is not None:
        result["per_category"] = per_category
    if classification is not None:
        result["classification"] = classification
    result["speed"] = _measure_speed(detector, samples, max_speed_images) if speed else None
    result["threshold"] = _num(getattr(detector, "threshold_", None))
    result["fit_info"] = getattr(detector, "fit_info_", None)
    result["notes"] = notes
    result = _clean(result)

    if out_dir is not None:
        _write_outputs(Path(out_dir), result, run, samples, labels, report)
    return result


# --------------------------------------------------------------------------- prediction
def _predict_all(detector, samples: list[Sample], batch_size: int, progress: bool) -> dict:
    """Predict batch by batch; check each map against its image; load the ground truth.
    Returns scores, maps, ground-truth masks (None = no pixel ground truth), their kind
    ("normal" | "mask" | "boxes" | None) and predicted class labels (or None)."""
    from tqdm.auto import tqdm

    scores, maps, gts, kinds, pred_labels = [], [], [], [], []
    batches = range(0, len(samples), batch_size)
    for start in tqdm(batches, desc=f"evaluate {getattr(detector, 'name', '')}", disable=not progress, leave=False):
        chunk = samples[start : start + batch_size]
        images = [s.load_image() for s in chunk]
        pred = detector.predict(images, batch_size=len(images))
        if len(pred.scores) != len(chunk) or len(pred.maps) != len(chunk):
            raise EvaluationError(f"{type(detector).__name__}.predict returned {len(pred.scores)} scores and "
                                  f"{len(pred.maps)} maps for {len(chunk)} images (first: {chunk[0].name})")
        for j, (s, img) in enumerate(zip(chunk, images)):
            hw = img.shape[:2]
            amap = np.asarray(pred.maps[j])
            if amap.shape != hw:
                raise EvaluationError(
                    f"{s.name}: {type(detector).__name__} returned an anomaly map of shape {amap.shape} for an "
                    f"image of {hw[0]}x{hw[1]} (HxW); maps must be on the original image geometry "
                    f"(ground-truth masks are never resized)")
            score = float(pred.scores[j])
            if not math.isfinite(score) or not np.isfinite(amap).all():
                raise EvaluationError(f"{s.name}: {type(detector).__name__} returned a non-finite score or map")
            if s.mask is not None:
                gt, kind = s.load_mask(hw), "mask"
            elif s.boxes:
                gt, kind = s.load_mask(hw), "boxes"
            elif s.label == 0:
                gt, kind = np.zeros(hw, dtype=bool), "normal"
            else:
                gt, kind = None, None
            scores.append(score)
            maps.append(amap.astype(np.float32, copy=False))
            gts.append(gt)
            kinds.append(kind)
        pred_labels.append(None if pred.labels is None else np.asarray(pred.labels))
    labels = None if any(p is None for p in pred_labels) else np.concatenate(pred_labels)
    return {"scores": np.array(scores, dtype=np.float64), "maps": maps, "gts": gts, "gt_kind": kinds,
            "pred_labels": labels}


# --------------------------------------------------------------------------- metrics
def _metrics_for(run: dict, labels: np.ndarray, idx) -> tuple[dict, list[str]]:
    """Metrics of the test images `idx` and notes on what was left out or undefined."""
    from .metrics import compute_metrics

    idx = list(idx)
    notes = []
    lab = labels[idx]
    sc = run["scores"][idx]
    pix = [i for i in idx if run["gts"][i] is not None]
    n_anom_no_gt = sum(1 for i in idx if run["gts"][i] is None)
    pix_has_anomaly = any(labels[i] == 1 for i in pix)
    if not n_anom_no_gt and pix_has_anomaly:
        m = dict(compute_metrics(lab, sc, masks=[run["gts"][i] for i in idx], maps=[run["maps"][i] for i in idx]))
    else:
        m = {k: v for k, v in compute_metrics(lab, sc).items() if k.startswith(IMAGE_PREFIX)}
        if pix_has_anomaly:
            pm = compute_metrics(labels[pix], run["scores"][pix], masks=[run["gts"][i] for i in pix],
                                 maps=[run["maps"][i] for i in pix])
            m.update({k: v for k, v in pm.items() if not k.startswith(IMAGE_PREFIX)})
            notes.append(f"{n_anom_no_gt} anomalous image(s) have no pixel ground truth and are left out of the "
                         f"pixel metrics ({len(pix)} images used); image metrics use all {len(idx)}")
        elif n_anom_no_gt:
            notes.append("no anomalous test image has pixel ground truth (mask or boxes): pixel metrics skipped")
        else:
            notes.append("the test set has no anomalous image: pixel metrics skipped")
    one_class = len(set(lab.tolist())) < 2
    for k, v in m.items():
        if v is None or (isinstance(v, float) and not math.isfinite(v)):
            if k.startswith(IMAGE_PREFIX) and one_class:
                why = f"the test images are all {'normal' if lab.max() == 0 else 'anomalous'}"
            elif not k.startswith(IMAGE_PREFIX) and not any(run["gts"][i].any() for i in pix):
                why = "the ground-truth masks hold no anomalous pixel"
            elif "_q" in k or k.startswith("rho"):
                why = "too few ground-truth regions to form defect-size quartiles"
            else:
                why = "distillad.metrics could not define it on this test set (see its warning in the log)"
            notes.append(f"{k} is undefined: {why}")
    return {k: _num(v) for k, v in m.items()}, notes


def _category_mean(per_cat: dict[str, dict]) -> tuple[dict, list[str]]:
    """Unweighted mean over categories of each metric, over the categories where it is defined."""
    keys = sorted({k for m in per_cat.values() for k in m})
    mean, notes = {}, []
    for k in keys:
        vals = {c: m.get(k) for c, m in per_cat.items()}
        ok = [v for v in vals.values() if v is not None and math.isfinite(v)]
        mean[k] = float(np.mean(ok)) if ok else None
        missing = [c for c, v in vals.items() if v is None or not math.isfinite(v)]
        if missing and ok:
            notes.append(f"mean of categories for {k} leaves out {', '.join(missing)} (undefined there)")
    return mean, notes


def _classification(detector, run, samples, class_names) -> dict | None:
    if run["pred_labels"] is None:
        return None
    from .metrics import classification_metrics
    y_true = np.array([s.class_id for s in samples], dtype=int)
    y_pred = np.asarray(run["pred_labels"]).astype(int)
    n_cls = int(max(y_true.max(), y_pred.max())) + 1
    names = tuple(class_names) if class_names else tuple(str(i) for i in range(n_cls))
    return dict(classification_metrics(y_true, y_pred, names))


# --------------------------------------------------------------------------- speed / memory
def _rss_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0). False when not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _rss_kb("VmHWM") is not None
    except OSError:
        return False


def _lifetime_peak_kb() -> int:
    import resource
    import sys
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r // 1024 if sys.platform == "darwin" else r  # bytes on macOS, kB elsewhere


def _measure_speed(detector, samples: list[Sample], max_images: int) -> dict:
    import torch

    images = [s.load_image() for s in samples[:max_images]]
    b8 = [images[i % len(images)] for i in range(max(8, len(images)))]
    for _ in range(2):  # warm-up: 2 batches of 8 (allocator, lazy init, caches)
        detector.predict(b8[:8], batch_size=8)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_before = _rss_kb("VmRSS")
    resettable = _reset_peak_rss()

    times = []
    for im in images:
        t0 = time.perf_counter()
        detector.predict([im], batch_size=1)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(0, len(b8), 8):
        detector.predict(b8[i : i + 8], batch_size=8)
    if cuda:
        torch.cuda.synchronize()
    total8 = time.perf_counter() - t0

    if resettable:
        peak_kb = _rss_kb("VmHWM")
        how = "peak RSS (VmHWM) of the process during timed inference; the counter was reset just before timing"
    else:
        peak_kb = _lifetime_peak_kb()
        how = "lifetime peak RSS of the process (ru_maxrss): the counter could not be reset, so it may include earlier work such as training"
    out = {
        "latency_ms_b1": 1000.0 * statistics.median(times),
        "throughput_ips_b8": len(b8) / total8 if total8 > 0 else None,
        "n_timed": len(images),
        "n_timed_b1": len(images),
        "n_timed_b8": len(b8),
        "peak_rss_mb": peak_kb / 1024.0 if peak_kb else None,
        "rss_before_mb": rss_before / 1024.0 if rss_before else None,
        "peak_rss_delta_mb": (peak_kb - rss_before) / 1024.0 if peak_kb and rss_before else None,
        "memory_measure": how,
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "torch_threads": torch.get_num_threads(),
        "what": SPEED_WHAT,
    }
    return out


# --------------------------------------------------------------------------- outputs
def _write_outputs(out_dir: Path, result: dict, run: dict, samples: list[Sample], labels: np.ndarray,
                   report: bool) -> None:
    """Everything is rendered in memory first, then each file written atomically."""
    from .io import atomic_write_bytes, write_json
    from .report import metrics_markdown

    md = metrics_markdown(result)
    html = _render_html(result, run, samples, labels) if report else None
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "metrics.md"]
    atomic_write_bytes(written[0], md.encode())
    if html is not None:
        written.append(out_dir / "report.html")
        atomic_write_bytes(written[-1], html.encode())
    written.append(out_dir / "metrics.json")
    write_json(written[-1], result)
    _readable_like_normal_files(written)


def _readable_like_normal_files(paths) -> None:
    """The atomic writer creates files through mkstemp (mode 0600); reports are meant to be
    read by others, so give them the mode a plain open() would (0666 minus the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    for p in paths:
        os.chmod(p, 0o666 & ~umask)


def _render_html(result: dict, run: dict, samples: list[Sample], labels: np.ndarray) -> str:
    from .report import build_html, display_range, histogram_png, pro_png, roc_png

    scores = run["scores"]
    figures = []
    roc = _image_roc_curves(samples, labels, scores, result)
    if roc:
        figures.append(("image-level ROC", roc_png(roc, "Image-level ROC")))
    pix = [i for i, g in enumerate(run["gts"]) if g is not None]
    if any(labels[i] == 1 for i in pix):
        fpr, tpr = pixel_roc_curve([run["gts"][i] for i in pix], [run["maps"][i] for i in pix])
        figures.append(("pixel-level ROC", roc_png([("pixels", fpr, tpr, result["metrics"].get("pixel_auroc"))],
                                                   "Pixel-level ROC")))
        pro = _pro_curve([run["gts"][i] for i in pix], [run["maps"][i] for i in pix])
        if pro is not None:
            figures.append(("PRO curve", pro_png(pro[0], pro[1], limit=0.3, aupro=result["metrics"].get("aupro_30"))))
    figures.append(("score histogram", histogram_png(scores[labels == 0], scores[labels == 1],
                                                     threshold=result.get("threshold"))))

    vmin, vmax = display_range([m for m, l in zip(run["maps"], labels) if l == 0], run["maps"])
    display = {"vmin": vmin, "vmax": vmax,
               "how": "from the median pixel value of the normal test images' maps to the largest value of any map "
                      "(one range for all images: per-image normalisation would make every normal image look anomalous)."
               if (labels == 0).any() else "from the smallest to the largest value of any map (no normal test image)."}
    anom = np.flatnonzero(labels == 1)
    norm = np.flatnonzero(labels == 0)
    top_anom = anom[np.argsort(-scores[anom], kind="stable")][:N_CASES]
    missed = anom[np.argsort(scores[anom], kind="stable")][:N_CASES]
    false_alarm = norm[np.argsort(-scores[norm], kind="stable")][:N_CASES]
    thr = result.get("threshold")
    case = lambda idx: [_case_item(samples[i], run["maps"][i], run["gts"][i], scores[i], vmin, vmax, thr) for i in idx]
    flag = (" Each caption says whether the detector's threshold_ flags the image." if thr is not None
            else " The detector has no threshold_, so whether an image would be flagged is not shown.")
    cases = [
        ("Most anomalous anomalous images", "Anomalous test images with the highest scores." + flag, case(top_anom)),
        ("Least anomalous anomalous images (closest to being missed)",
         "Anomalous test images with the lowest scores: missed when below threshold_." + flag, case(missed)),
        ("Most anomalous normal images (closest to false alarms)",
         "Normal test images with the highest scores: false alarms when above threshold_." + flag, case(false_alarm)),
    ]
    return build_html(result, figures, cases, display)


def _case_item(sample: Sample, amap, gt, score, vmin, vmax, threshold=None) -> dict:
    from PIL import Image
    from .report import overlay

    rgb = overlay(sample.load_image(), amap, gt if gt is not None and gt.any() else None, vmin, vmax)
    im = Image.fromarray(rgb)
    if max(im.size) > CASE_MAX_SIDE:
        f = CASE_MAX_SIDE / max(im.size)
        im = im.resize((max(1, round(im.size[0] * f)), max(1, round(im.size[1] * f))), Image.Resampling.LANCZOS)
    elif max(im.size) < CASE_MIN_SIDE:  # e.g. 28 px Fashion-MNIST: enlarge, pixels kept square
        k = -(-CASE_MIN_SIDE // max(im.size))
        im = im.resize((im.size[0] * k, im.size[1] * k), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return {"name": sample.name, "score": score, "category": sample.category, "defect_type": sample.defect_type,
            "flagged": None if threshold is None else bool(score > threshold), "png": buf.getvalue()}


def _image_roc_curves(samples, labels, scores, result) -> list:
    curves = []
    if len(set(labels.tolist())) == 2:
        curves.append(("all", *roc_points(labels, scores), result["metrics"].get("image_auroc")))
    per_cat = result.get("per_category") or {}
    cats = [c for c in per_cat if c != "mean"][:MAX_ROC_CATEGORIES]
    for c in cats:
        idx = np.array([i for i, s in enumerate(samples) if s.category == c])
        if len(set(labels[idx].tolist())) == 2:
            curves.append((c, *roc_points(labels[idx], scores[idx]), per_cat[c].get("image_auroc")))
    return curves


def roc_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact ROC vertices (fpr, tpr), one per distinct score, from (0, 0) to (1, 1); tied
    scores form one vertex (the AUROC convention of distillad.metrics)."""
    labels = np.asarray(labels).astype(bool)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    s, y = np.asarray(scores, dtype=np.float64)[order], labels[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]
    tp = np.r_[0, np.cumsum(y)[last_of_tie]]
    fp = np.r_[0, np.cumsum(~y)[last_of_tie]]
    return fp / max(fp[-1], 1), tp / max(tp[-1], 1)


def pixel_roc_curve(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray], bins: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Pixel ROC for plotting, from histograms of anomalous and normal pixel values on `bins`
    equal bins (memory O(bins), one pass over the maps; the exact AUROC is in the metrics)."""
    lo = min(float(m.min()) for m in maps)
    hi = max(float(m.max()) for m in maps)
    if not hi > lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    pos = np.zeros(bins, np.int64)
    neg = np.zeros(bins, np.int64)
    for gt, m in zip(masks, maps):
        pos += np.histogram(m[gt], edges)[0]
        neg += np.histogram(m[~gt], edges)[0]
    # threshold at each bin edge from the top: pixels at or above it are flagged
    tp = np.concatenate([[0], np.cumsum(pos[::-1])])
    fp = np.concatenate([[0], np.cumsum(neg[::-1])])
    return fp / max(fp[-1], 1), tp / max(tp[-1], 1)


def _pro_curve(masks, maps):
    """(fpr, pro) of the PRO curve from distillad.metrics, or None with a log message."""
    from . import metrics
    try:
        fpr, pro = metrics.pro_curve(masks, maps)[:2]
    except Exception as e:  # a figure must not sink the evaluation; the metric values are separate
        log.warning("PRO curve not drawn: %s", e)
        return None
    return np.asarray(fpr), np.asarray(pro)


# --------------------------------------------------------------------------- JSON helpers
def _num(v):
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return f if math.isfinite(f) else None


def _clean(obj):
    """JSON-ready copy: numpy scalars/arrays to Python, NaN/inf to None, tuples to lists."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _num(obj)
    if isinstance(obj, (str, type(None))):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)  # anything else (objects in params or fit_info) as its repr


def _jsonable_params(detector) -> dict:
    try:
        params = detector.get_params()
    except Exception:  # a detector without scikit-learn style params
        return {}
    out = {}
    for k, v in params.items():
        if k == "teacher" and not isinstance(v, (str, type(None))):
            continue  # recorded under "teacher" from the fitted teacher_
        out[k] = v if isinstance(v, (str, int, float, bool, type(None), list, tuple, dict)) else repr(v)
    return out


def _teacher_spec(detector) -> dict | None:
    t = getattr(detector, "teacher_", None)
    if t is not None and hasattr(t, "spec"):
        try:
            return t.spec()
        except Exception as e:  # a spec must not sink an evaluation
            return {"name": getattr(t, "name", type(t).__name__), "error": str(e)}
    return None
