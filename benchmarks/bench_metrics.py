"""Wall time and peak memory of distillad.metrics on a large synthetic test set.

Default: 100 anomaly maps of 1024 x 1024 (70 anomalous images with 1-6 defects of 1 to ~40k
pixels each, 30 normal images), float32 scores with many distinct values. Each measurement runs
in a fresh subprocess so its peak RSS (resource.getrusage ru_maxrss) is its own. Wall time
depends on what else runs on the machine, so CPU time and the load average are printed too:

- aupro_quartiles: ``aupro_quartiles(masks, maps, limits=(0.3, 0.1, 0.05, 0.01))``, one call
  giving AUPRO at all four limits (= Q4) and the Q1-Q3 quartile AUPRO and rho at each of them
  (a superset of the default quartile limits 0.3 and 0.05). Target: < 15 s and < 4 GiB.
- compute_metrics: ``compute_metrics(labels, scores, masks, maps)``, every key (image, pixel
  AUROC/AP/F1-max, the four AUPRO limits, quartiles at 0.3 and 0.05); needs the full sort of the
  normal pixels for the exact pixel AUROC.

Run:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_metrics.py [--n 100 --size 1024]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

CASES = ("aupro_quartiles", "compute_metrics")


def make_test_set(n: int, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    n_anom = int(round(0.7 * n))
    yy, xx = np.mgrid[:size, :size]
    masks, maps = [], []
    for i in range(n):
        mask = np.zeros((size, size), bool)
        if i < n_anom:
            for _ in range(rng.integers(1, 7)):
                # ellipses with radii from 0.5 px (one pixel) to ~110 px: areas 1 .. ~40k px
                r = float(np.exp(rng.uniform(np.log(0.5), np.log(110))))
                ry, rx = r * rng.uniform(0.5, 1.5), r * rng.uniform(0.5, 1.5)
                cy, cx = rng.uniform(0, size, 2)
                y0, y1 = int(max(cy - ry - 1, 0)), int(min(cy + ry + 2, size))
                x0, x1 = int(max(cx - rx - 1, 0)), int(min(cx + rx + 2, size))
                sub = ((yy[y0:y1, x0:x1] - cy) / max(ry, 0.5)) ** 2 + ((xx[y0:y1, x0:x1] - cx) / max(rx, 0.5)) ** 2 <= 1
                mask[y0:y1, x0:x1] |= sub
        amap = rng.random((size, size), dtype=np.float32)
        amap[mask] += rng.uniform(0.2, 1.0)
        masks.append(mask)
        maps.append(amap)
    labels = np.array([int(m.any()) for m in masks])
    scores = np.array([float(np.partition(a.ravel(), a.size - max(1, a.size // 1000))[-max(1, a.size // 1000):].mean()) for a in maps])
    return labels, scores, masks, maps


def child(case: str, n: int, size: int) -> None:
    from distillad import metrics

    labels, scores, masks, maps = make_test_set(n, size)
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    load = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    if case == "aupro_quartiles":
        out = metrics.aupro_quartiles(masks, maps, limits=(0.3, 0.1, 0.05, 0.01))
    else:
        out = metrics.compute_metrics(labels, scores, masks, maps)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    n_anom_px = int(sum(int(m.sum()) for m in masks))
    from scipy import ndimage
    n_regions = sum(ndimage.label(m, structure=np.ones((3, 3)))[1] for m in masks)
    print(json.dumps({"case": case, "seconds": seconds, "cpu_seconds": cpu, "load_avg_1min": load, "peak_rss_gib": rss_peak / 2**20,
                      "data_rss_gib": rss_data / 2**20, "pixels": n * size * size,
                      "anomalous_pixels": n_anom_px, "regions": int(n_regions),
                      "metrics": {k: round(float(v), 4) for k, v in out.items()}}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="number of maps")
    ap.add_argument("--size", type=int, default=1024, help="maps are size x size")
    ap.add_argument("--case", choices=CASES, action="append", help="run only these cases")
    ap.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.n, args.size)
        return
    for case in args.case or CASES:
        cmd = [sys.executable, __file__, "--child", case, "--n", str(args.n), "--size", str(args.size)]
        res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        print(f"{case}: {res['seconds']:.2f} s wall ({res['cpu_seconds']:.2f} s CPU, 1-min load average "
              f"{res['load_avg_1min']:.1f} on {os.cpu_count()} cores), peak RSS {res['peak_rss_gib']:.2f} GiB "
              f"(inputs and interpreter alone: {res['data_rss_gib']:.2f} GiB); {res['pixels']:,} pixels, "
              f"{res['anomalous_pixels']:,} anomalous in {res['regions']} regions")
        print("   ", json.dumps(res["metrics"]))


if __name__ == "__main__":
    main()
