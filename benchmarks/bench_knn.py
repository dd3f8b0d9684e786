"""Scaling of the knn reference detector: fit on all MTSD normal training images at 256 px.

Target (foundation issue, section 6): all ~700 MTSD training images at 256 px in under 5 minutes
on this 2-core machine, with bounded memory. Prints fit time, the phases, bank size and peak RSS.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_knn.py [--root ../shared/datasets/magnetic_tile]
"""
from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import torch

import distillad
from distillad.data import mtsd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/magnetic_tile"))
    ap.add_argument("--image-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    split = mtsd(a.root, task="unsupervised", seed=0)
    train = [s for s in split.train if s.label == 0]
    model = distillad.create_model("knn", image_size=a.image_size)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0, c0 = time.perf_counter(), time.process_time()
    model.fit(train, progress=False)
    fit_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    load = os.getloadavg()[0]
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"knn fit on {len(train)} MTSD training images at {a.image_size} px: {fit_s:.1f} s "
          f"wall, {cpu_s:.1f} s CPU (threads {a.threads}, load average {load:.1f}); bank {tuple(model.bank_.shape)}; peak RSS {rss1:.0f} MiB "
          f"(before fit {rss0:.0f} MiB)")


if __name__ == "__main__":
    main()
