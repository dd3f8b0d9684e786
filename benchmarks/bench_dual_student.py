"""Speed of dual_student and of its encoder-decoder student alone (dinomaly) with a ViT-S/14
teacher (DINOv2-reg architecture, random weights: timing only) at 224 px.

Measures, for students="both" and "decoder":
- teacher feature caching, s per training image (done once per fit: training never recomputes
  frozen teacher features);
- training iterations per second at the given global batch, from the difference of two fits
  that differ only in the number of iterations (so caching and calibration cancel out);
- inference latency at batch 1 (median over repeats, ms per image) and throughput at batch 8.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_dual_student.py [--threads 2] [--batch-size 8]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from distillad.data import Sample
from distillad.models.base import create_model
from distillad.teachers import create


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", default="dinov2_vits14_reg")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--resize", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--n-train", type=int, default=16)
    ap.add_argument("--iters", default="1,4", help="two iteration counts; their time difference is measured")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    teacher = create(a.teacher, weights="random")
    rng = np.random.default_rng(0)
    train = [Sample(rng.integers(0, 255, (300, 300, 3), dtype=np.uint8)) for _ in range(a.n_train)]
    imgs = [rng.integers(0, 255, (300, 300, 3), dtype=np.uint8) for _ in range(8)]
    i1, i2 = (int(v) for v in a.iters.split(","))
    print(f"teacher {a.teacher} (random weights), {a.image_size} px (resize {a.resize} + centre crop), "
          f"global batch {a.batch_size}, {a.n_train} training images, torch threads {a.threads}")
    for students in ("both", "decoder"):
        def make(iters):
            return create_model("dual_student", teacher=teacher, students=students, image_size=a.image_size,
                                resize=a.resize, iterations=iters, batch_size=a.batch_size, device="cpu")

        # caching alone: a fit of 1 iteration minus the measured per-iteration time below
        t = {}
        for iters in (i1, i2):
            m = make(iters)
            t0 = time.perf_counter()
            m.fit(train, progress=False)
            t[iters] = time.perf_counter() - t0
        per_it = (t[i2] - t[i1]) / (i2 - i1)
        lat = []
        m.predict(imgs[:1])
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            m.predict(imgs[:1])
            lat.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        m.predict(imgs, batch_size=8)
        thr = len(imgs) / (time.perf_counter() - t0)
        n_par = sum(p.numel() for p in m.students_.parameters())
        label = "dual_student (both students)" if students == "both" else "encoder-decoder student alone (dinomaly)"
        print(f"{label}: student params {n_par / 1e6:.1f} M; training {1 / per_it:.3f} it/s "
              f"({per_it:.2f} s/it at batch {a.batch_size}); fit({i1} it) {t[i1]:.1f} s incl. caching + "
              f"calibration; inference latency {1000 * statistics.median(lat):.0f} ms/img (batch 1), "
              f"{thr:.2f} img/s (batch 8)")


if __name__ == "__main__":
    main()
