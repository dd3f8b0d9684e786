"""Speed of dual_student and of its encoder-decoder student alone (dinomaly) with a ViT-S/14
teacher (DINOv2-reg architecture, random weights: timing only) at 224 px.

Measures, for students="both" and "decoder":
- teacher feature caching, s per training image (done once per fit: training never recomputes
  frozen teacher features);
- training iterations per second at the given global batch (the training loop alone, timed
  inside `fit`: `model.timing_`);
- inference latency at batch 1 (median over repeats, ms per image) and throughput at batch 8.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_dual_student.py speed [--threads 2] [--batch-size 8]

`fmnist` subcommand (quality, not speed): Fashion-MNIST multi-class splits A-D with the offline
EfficientNet-Lite0 teacher. Per split it trains dual_student once and reports the image AUROC
of the fused score and of each student's own score inside that jointly trained model; on the
splits named by --alone it also trains each student ALONE (students="encoder" and `dinomaly`);
and the knn reference detector. Subsampled (train/test images per class) to fit a CPU budget.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_dual_student.py fmnist --out DIR
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


def speed(argv=None):
    ap = argparse.ArgumentParser(prog="bench_dual_student.py speed")
    ap.add_argument("--teacher", default="dinov2_vits14_reg")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--resize", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--n-train", type=int, default=16)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    teacher = create(a.teacher, weights="random")
    rng = np.random.default_rng(0)
    train = [Sample(rng.integers(0, 255, (300, 300, 3), dtype=np.uint8)) for _ in range(a.n_train)]
    imgs = [rng.integers(0, 255, (300, 300, 3), dtype=np.uint8) for _ in range(8)]
    print(f"teacher {a.teacher} (random weights), {a.image_size} px (resize {a.resize} + centre crop), "
          f"global batch {a.batch_size}, {a.n_train} training images, torch threads {a.threads}")
    for students in ("both", "decoder"):
        def make(iters):
            return create_model("dual_student", teacher=teacher, students=students, image_size=a.image_size,
                                resize=a.resize, iterations=iters, batch_size=a.batch_size, device="cpu")

        m = make(a.iterations)
        m.fit(train, progress=False)
        tm = m.timing_
        per_it = tm["train_seconds"] / tm["iterations"]
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
              f"({per_it:.2f} s/it at batch {a.batch_size}, mean of {tm['iterations']}); teacher-feature caching "
              f"{tm['cache_seconds'] / tm['n_images']:.2f} s/img (once per fit); inference latency {1000 * statistics.median(lat):.0f} ms/img (batch 1), "
              f"{thr:.2f} img/s (batch 8)")


def _student_view(model, which: str):
    """The jointly trained model scored by one of its students only (no retraining)."""
    import copy

    from distillad.models.dual_student.detector import _Students

    v = copy.copy(model)
    v.students = which
    st = model.students_
    v.students_ = _Students(st.decoder if which == "decoder" else None, st.encoder if which == "encoder" else None)
    return v


def fmnist(argv=None):
    import json
    from pathlib import Path

    from distillad.data import open_dataset
    from distillad.evaluate import evaluate

    ap = argparse.ArgumentParser(prog="bench_dual_student.py fmnist")
    ap.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--splits", default="A,B,C,D")
    ap.add_argument("--alone", default="A", help="splits on which each student is also trained alone ('' = none)")
    ap.add_argument("--train-per-class", type=int, default=40)
    ap.add_argument("--test-per-class", type=int, default=30)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--iterations", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--teacher", default="tf_efficientnet_lite0")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    common = dict(teacher=a.teacher, image_size=a.image_size, resize=a.image_size, iterations=a.iterations,
                  batch_size=a.batch_size, lr=a.lr)
    rows = {}

    def auroc(model, split):
        return round(float(evaluate(model, split, speed=False, report=False, progress=False)["metrics"]["image_auroc"]), 4)

    for key in a.splits.split(","):
        split = open_dataset(f"fmnist:{a.root}?split={key}&train_per_class={a.train_per_class}"
                             f"&test_per_class={a.test_per_class}")
        r = {}
        m = create_model("dual_student", **common).fit(split.train, progress=False)
        r["dual_student"] = auroc(m, split)
        r["decoder score in joint model"] = auroc(_student_view(m, "decoder"), split)
        r["encoder score in joint model"] = auroc(_student_view(m, "encoder"), split)
        if key in a.alone.split(","):
            r["decoder alone (dinomaly)"] = auroc(create_model("dinomaly", **common).fit(split.train, progress=False), split)
            r["encoder alone"] = auroc(create_model("dual_student", students="encoder", **common)
                                       .fit(split.train, progress=False), split)
        r["knn"] = auroc(create_model("knn", teacher=a.teacher, image_size=a.image_size).fit(split.train, progress=False),
                         split)
        rows[key] = r
        print(f"split {key} ({len(split.train)} train / {len(split.test)} test): {r}", flush=True)
        (out / "fmnist.json").write_text(json.dumps({"args": vars(a), "image_auroc": rows}, indent=1))
    cols = sorted({c for r in rows.values() for c in r}, key=lambda c: list(next(iter(rows.values()))).index(c)
                  if c in next(iter(rows.values())) else 99)
    lines = ["| split | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for key, r in rows.items():
        lines.append(f"| {key} | " + " | ".join(f"{r[c]:.3f}" if c in r else "-" for c in cols) + " |")
    lines.append("| mean | " + " | ".join(
        f"{np.mean([r[c] for r in rows.values() if c in r]):.3f}" for c in cols) + " |")
    (out / "fmnist.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    import sys

    cmd = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else "speed"
    rest = sys.argv[2:] if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else sys.argv[1:]
    {"speed": speed, "fmnist": fmnist}[cmd](rest)
