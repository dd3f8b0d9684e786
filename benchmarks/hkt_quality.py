"""The data and PDN teachers behind the hkt quality table (docs/hkt.md, "Quality here").

    # 1. seeded symlink subsets of MTSD and DeepPCB (the hazelnut subset is used whole)
    python benchmarks/hkt_quality.py subsets --shared ../shared/datasets --out /tmp/hkt/data
    # 2. PDN-S and PDN-M pretrained from EfficientNet-Lite2 on the bench's *training* split only
    python benchmarks/hkt_quality.py pretrain --data /tmp/hkt/data --variant s --steps 150 --batch-size 4 --out /tmp/hkt/pdn_s.safetensors
    python benchmarks/hkt_quality.py pretrain --data /tmp/hkt/data --variant m --steps 100 --batch-size 2 --out /tmp/hkt/pdn_m.safetensors
    # 3. one bench run over the three sets (the command is in docs/hkt.md)

Why subsets: on this 2-core machine hkt+ predicts ~1-2 s per image, so the full test sets
(1,271 images) alone would take about an hour per variant. `pretrain` uses the training split the
bench will use (`distillad bench` opens the same spec with the same seed), so the teacher never
sees a test image. `distillad teachers pretrain-pdn` does the same from image folders.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def bench_spec(data: Path, shared: Path) -> str:
    return (f"mtsd:{data / 'mtsd'},mvtec:{shared / 'mvtec_hazelnut_subset' / 'hazelnut'},"
            f"deeppcb:{data / 'deeppcb'}")


def subsets(args) -> None:
    src, dst = Path(args.shared).resolve(), Path(args.out)
    shutil.rmtree(dst, ignore_errors=True)
    rng = random.Random(0)
    # MTSD: 400 MT_Free (split 75/25 by the loader), 20 images per defect class
    for cls in sorted(os.listdir(src / "magnetic_tile")):
        d = src / "magnetic_tile" / cls / "Imgs"
        if not d.is_dir():
            continue
        jpgs = sorted(d.glob("*.jpg"))
        out = dst / "mtsd" / cls / "Imgs"
        out.mkdir(parents=True, exist_ok=True)
        for j in rng.sample(jpgs, min(400 if cls == "MT_Free" else 20, len(jpgs))):
            for p in (j, j.with_suffix(".png")):
                (out / p.name).symlink_to(p)
    # DeepPCB: 150 template / test pairs drawn over all groups
    pairs = []
    for g in sorted((src / "deeppcb" / "PCBData").iterdir()):
        n = g.name[5:]
        pairs += [(g.name, n, t.name[:-9]) for t in sorted((g / n).glob("*_temp.jpg"))]
    for gname, n, pid in rng.sample(pairs, 150):
        g = src / "deeppcb" / "PCBData" / gname
        a, b = dst / "deeppcb" / "PCBData" / gname / n, dst / "deeppcb" / "PCBData" / gname / f"{n}_not"
        a.mkdir(parents=True, exist_ok=True)
        b.mkdir(parents=True, exist_ok=True)
        for suf in ("_temp.jpg", "_test.jpg"):
            (a / f"{pid}{suf}").symlink_to(g / n / f"{pid}{suf}")
        (b / f"{pid}.txt").symlink_to(g / f"{n}_not" / f"{pid}.txt")
    print(f"subsets written to {dst}; bench spec:\n{bench_spec(dst.resolve(), src)}")


def pretrain(args) -> None:
    import logging

    import torch

    from distillad.data import open_dataset
    from distillad.teachers.pdn import pretrain_pdn

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO)
    split = open_dataset(bench_spec(Path(args.data).resolve(), Path(args.shared).resolve()), seed=0)
    print(f"pretraining pdn_{args.variant} on {len(split.train)} training images, "
          f"{args.steps} steps of batch {args.batch_size}", flush=True)
    pretrain_pdn(split.train, args.out, variant=args.variant, steps=args.steps, batch_size=args.batch_size,
                 checkpoint_every=10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("subsets")
    s.add_argument("--shared", default="../shared/datasets")
    s.add_argument("--out", default="/tmp/hkt/data")
    s.set_defaults(func=subsets)
    t = sub.add_parser("pretrain")
    t.add_argument("--data", default="/tmp/hkt/data")
    t.add_argument("--shared", default="../shared/datasets")
    t.add_argument("--variant", choices=["s", "m"], default="s")
    t.add_argument("--steps", type=int, default=150)
    t.add_argument("--batch-size", type=int, default=4)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--out", required=True)
    t.set_defaults(func=pretrain)
    a = p.parse_args()
    a.func(a)


if __name__ == "__main__":
    main()
