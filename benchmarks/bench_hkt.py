"""How much of this machine HKT / HKT+ inference uses: measured FLOP/s over measured fp32 peak.

    OMP_NUM_THREADS=2 python benchmarks/bench_hkt.py [--threads 2] [--size 256] [--repeats 5]

1. Peak: fp32 `torch.mm` of two N x N matrices (N = 2048 by default), best of several runs,
   with the same thread count, in the same process (so both see the same machine load).
2. Model: FLOPs per image counted with `torch.utils.flop_counter.FlopCounterMode` (teacher PDN +
   student stage 4, the inference graph; 1 multiply-add = 2 FLOPs), divided by the best measured
   time per image of the full inference forward (teacher, standardisation, student, squared
   difference) at batch 1 and batch 8, random weights (speed does not depend on them).
3. Fraction = model FLOP/s / peak FLOP/s. Target >= 0.4. Layout variants: contiguous NCHW and
   channels_last (oneDNN convolutions).

Also prints the parameter and FLOP counts (`HKT.complexity()`), latency (ms / image at batch 1) and throughput (images / s at batch 8). Pre- and
post-processing (resize, map upsampling, geometry restore) are outside this measurement; the
end-to-end numbers of `distillad bench` include them.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from distillad import teachers
from distillad.models.hkt import HKT, HKTStudent


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up (oneDNN primitive creation)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak(n: int, repeats: int) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    t = best_time(lambda: torch.mm(a, b), repeats)
    return 2 * n**3 / t


def model_for(variant: str) -> HKT:
    m = HKT(teacher=teachers.create("pdn_m" if variant == "hkt+" else "pdn_s", weights="random"), variant=variant)
    m.teacher_ = m.teacher.freeze()
    m.student_ = HKTStudent(variant).eval()
    c = m.teacher_.channels(1)
    m.t_mean_, m.t_std_ = torch.zeros(1, c, 1, 1), torch.ones(1, c, 1, 1)
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--mm", type=int, default=2048, help="matrix size of the peak measurement")
    ap.add_argument("--variants", default="hkt,hkt+")
    ap.add_argument("--layouts", default="nchw,channels_last", help="memory layouts to time")
    ap.add_argument("--batches", default="1,8", help="batch sizes to time")
    ap.add_argument("--json", default=None, help="also write the results here")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = []
    for variant in a.variants.split(","):
        m = model_for(variant)
        cx = m.complexity(a.size)
        flops = cx["flops_inference"]
        print(f"{variant}: {json.dumps(cx)}", flush=True)
        for layout in a.layouts.split(","):
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            m.teacher_.to(memory_format=fmt)
            m.student_.to(memory_format=fmt)
            for batch in [int(b) for b in a.batches.split(",")]:
                x = torch.randn(batch, 3, a.size, a.size).contiguous(memory_format=fmt)
                with torch.inference_mode():
                    peak_before = matmul_peak(a.mm, a.repeats)
                    t = best_time(lambda: m.anomaly_maps(x), a.repeats if batch == 1 else max(2, a.repeats // 2))
                    peak = max(peak_before, matmul_peak(a.mm, a.repeats))
                per_img = t / batch
                rows.append({"variant": variant, "layout": layout, "batch": batch, "threads": a.threads,
                             "gflops_per_image": flops / 1e9, "ms_per_image": 1e3 * per_img,
                             "images_per_s": 1 / per_img, "model_gflops_s": flops / per_img / 1e9,
                             "peak_gflops_s": peak / 1e9, "fraction_of_peak": flops / per_img / peak})
                r = rows[-1]
                print(f"{variant:5s} {layout:13s} batch {batch}: {r['gflops_per_image']:.1f} GFLOP/img, "
                      f"{r['ms_per_image']:.0f} ms/img, {r['images_per_s']:.2f} img/s, {r['model_gflops_s']:.1f} GFLOP/s "
                      f"of peak {r['peak_gflops_s']:.1f} GFLOP/s = {r['fraction_of_peak']:.2f}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
