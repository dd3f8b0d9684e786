"""L2BT speed and memory (not a test: numbers for docs/l2bt.md and the README).

1. latency: end-to-end `L2BT.predict` of one image (uint8 in, map on the original geometry and
   score out: preprocessing, teacher, students, fusion, restore, smoothing, top-k) divided by the
   bare teacher forward on the already preprocessed tensor (the blocks up to layer k, final norm).
   Target: <= 1.15, i.e. the students and post-processing cost almost nothing next to the teacher.
   ViT-S/14 with random weights (timing does not depend on the weights), batch 1, one thread,
   timings interleaved (teacher, end-to-end, teacher, ...) so that load from other processes
   hits both alike; the median of each is reported.
2. train: fit on 28 images (the hazelnut subset's training set when present, else synthetic
   512 x 512 images) at 518 px with the ViT-S/14 teacher, paper schedule (50 epochs, 4 images per
   step), once with the default cache budget and once with a small one that forces spilling.
   Reports wall time, the bytes the cache keeps in memory, and the peak RSS growth above the
   RSS before fit in each phase of fit: teacher features (cached), student training, threshold
   calibration (the base class predicts on up to 32 training images); VmHWM is reset through
   /proc/self/clear_refs at each phase boundary.

Usage:
  OMP_NUM_THREADS=1 python benchmarks/bench_l2bt.py latency --sizes 518,1036 --repeats 5
  OMP_NUM_THREADS=1 python benchmarks/bench_l2bt.py train --budgets 2048,32
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from distillad.data.samples import Sample
from distillad.models.l2bt import L2BT
from distillad.teachers import create

HAZELNUT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mvtec_hazelnut_subset" / "hazelnut"


def synthetic(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def bench_latency(sizes, repeats, orig):
    teacher = create("dinov2_vits14_reg", weights="random")
    out = []
    for size in sizes:
        m = L2BT(teacher=teacher, image_size=size, epochs=1, batch_size=2)
        m.fit([Sample(image=im, label=0) for im in synthetic(2, orig)], progress=False)
        img = synthetic(1, orig, seed=1)[0]
        x, _ = m._preprocess().batch([img])
        j, k = m.layers_
        t_teacher, t_e2e = [], []
        with torch.no_grad():
            teacher(x, [j, k], final_norm=True)  # warm-up
            m.predict([img])
            for _ in range(repeats):
                t0 = time.perf_counter()
                teacher(x, [j, k], final_norm=True)
                t_teacher.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                m.predict([img])
                t_e2e.append(time.perf_counter() - t0)
        tt, te = statistics.median(t_teacher), statistics.median(t_e2e)
        row = {"image_size": size, "original": f"{orig}x{orig}", "teacher_ms": round(tt * 1e3, 1),
               "end_to_end_ms": round(te * 1e3, 1), "ratio": round(te / tt, 3), "repeats": repeats}
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def _rss_hwm_reset():
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    return 0


class _Phases:
    """Peak RSS (VmHWM, reset at each phase boundary) and time of the phases of `fit`."""

    def __init__(self):
        self.peaks, self.seconds, self._name, self._t = {}, {}, "teacher_features", time.perf_counter()

    def mark(self, ended_name_next=None):
        self.peaks[self._name] = _status("VmHWM")
        self.seconds[self._name] = round(time.perf_counter() - self._t, 1)
        _rss_hwm_reset()
        self._name, self._t = ended_name_next, time.perf_counter()


def _instrument_phases(model):
    """Benchmark-only wrappers marking: teacher features -> student training -> threshold
    calibration (the base class predicts on training images after `_fit`)."""
    phases = _Phases()
    train_pair, calib = model._train_pair, model._calibration_scores

    def _train_pair(*a, **k):
        phases.mark("student_training")
        return train_pair(*a, **k)

    def _calibration_scores(*a, **k):
        phases.mark("calibration")
        return calib(*a, **k)

    model._train_pair, model._calibration_scores = _train_pair, _calibration_scores
    return phases


def bench_train(budgets, size, epochs):
    from distillad.data import open_dataset

    if HAZELNUT.exists():
        train = list(open_dataset(f"mvtec:{HAZELNUT}").train)
        source = f"hazelnut subset train ({len(train)} images)"
    else:
        train = [Sample(image=im, label=0) for im in synthetic(28, 512)]
        source = "28 synthetic 512x512 images"
    teacher = create("dinov2_vits14_reg", weights="random")
    out = []
    for budget in budgets:
        m = L2BT(teacher=teacher, image_size=size, epochs=epochs, cache_budget_mb=budget)
        phases = _instrument_phases(m)
        base = _status("VmRSS")
        reset = _rss_hwm_reset()
        t0 = time.perf_counter()
        m.fit(train, progress=False)
        secs = time.perf_counter() - t0
        phases.mark()
        mb = lambda v: None if not reset else round((v - base) / 2**20, 1)  # noqa: E731
        row = {"data": source, "image_size": size, "epochs": epochs, "budget_mb": budget,
               "fit_seconds": round(secs, 1), "cache_in_memory_mb": round(m.cache_stats_["in_memory_bytes"] / 2**20, 1),
               "spilled_images": m.cache_stats_["spilled_images"],
               "peak_rss_growth_mb": {k: mb(v) for k, v in phases.peaks.items()},
               "phase_seconds": phases.seconds, "final_loss": m.loss_history_[-1]}
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=["latency", "train", "all"])
    p.add_argument("--sizes", default="518,1036")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--original", type=int, default=1024, help="side of the square test image (MVTec AD: 1024)")
    p.add_argument("--budgets", default="2048,32", help="cache budgets in MB for the training runs")
    p.add_argument("--train-size", type=int, default=518)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.part in ("latency", "all"):
        bench_latency([int(s) for s in a.sizes.split(",")], a.repeats, a.original)
    if a.part in ("train", "all"):
        bench_train([float(b) for b in a.budgets.split(",")], a.train_size, a.epochs)


if __name__ == "__main__":
    main()
