"""OneN quality and cost on real data (paper tables 3, 11-14), side by side with a CNN + Grad-CAM++.

    # table 3: parameters and FLOPs of OneN-S/B/L at the paper's size (224 px, DeiT-B width)
    python benchmarks/bench_onen.py complexity

    # MTSD (6 classes, ~75/25 split), one input setting, OneN without masks / weak boxes / masks
    python benchmarks/bench_onen.py run --data mtsd --root ../shared/datasets/magnetic_tile \
        --setting STD+G --out /tmp/onen/bench_mtsd_stdg

    # DeepPCB (normal templates vs defective test images, box masks = weak supervision), setting B
    python benchmarks/bench_onen.py run --data deeppcb --root ../shared/datasets/deeppcb \
        --setting B --supervision none,boxes --out /tmp/onen/bench_pcb_b

`run` first trains the CNN classifier (`cnn_cam`, offline ImageNet weights) and evaluates it with
Grad-CAM++; that trained CNN is then the teacher of every OneN run (one teacher for the three
supervision levels, so they differ only in the student's supervision; no Mask-CNN branch).
Every model is selected by TR-AW (training loss). Writes summary.md / summary.json in --out,
and each model's metrics.json in a sub-folder.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import distillad  # noqa: E402
from distillad.evaluate import evaluate  # noqa: E402
from distillad.models.onen import DistilledViT, input_setting, weak_boxes  # noqa: E402


def complexity(args) -> None:
    from distillad.models.common import count_flops
    rows = []
    for variant, depth in (("S", 3), ("B", 8), ("L", 12)):
        vit = DistilledViT(6, depth=depth, img_size=args.image_size, patch_size=args.patch_size,
                           embed_dim=args.embed_dim, num_heads=args.num_heads).eval()
        params = sum(p.numel() for p in vit.parameters())
        flops = count_flops(vit, torch.empty(1, 3, args.image_size, args.image_size))  # 2 per MAC
        rows.append((f"OneN-{variant}", params / 1e6, flops / 1e9))
    print(f"One {args.image_size} x {args.image_size} image, width {args.embed_dim}, {args.num_heads} heads, patch {args.patch_size}:\n")
    print("| model | params (M) | GMACs | GFLOPs (2 per MAC) |")
    print("| --- | --- | --- | --- |")
    for name, p, g in rows:
        print(f"| {name} | {p:.2f} | {g / 2:.2f} | {g:.2f} |")


def load_split(args):
    from distillad.data import deeppcb, mtsd
    if args.data == "mtsd":
        split = mtsd(args.root, task="classification", seed=args.seed)
    else:
        split = deeppcb(args.root, task="classification", seed=args.seed)
    return input_setting(split, args.setting, seed=args.seed)


def row(name, res, fit_seconds):
    m, c = res["metrics"], res.get("classification") or {}
    sp = res.get("speed") or {}
    return {"model": name, "accuracy": c.get("accuracy"), "accuracy_per_class": c.get("accuracy_per_class"),
            "pixel_auroc": m.get("pixel_auroc"), "pixel_ap": m.get("pixel_ap"), "pixel_f1_max": m.get("pixel_f1_max"),
            "image_auroc": m.get("image_auroc"), "image_ap": m.get("image_ap"), "image_f1_max": m.get("image_f1_max"),
            "latency_ms_b1": sp.get("latency_ms_b1"), "fit_seconds": round(fit_seconds, 1)}


def run(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    split = load_split(args)
    logging.info("%s: %d train / %d test, classes %s", split.name, len(split.train), len(split.test), split.class_names)
    common = dict(image_size=args.image_size, batch_size=args.batch_size, seed=args.seed)
    rows = []
    if args.cnn_model:  # reuse a CNN trained by an earlier run (same split and seed)
        cam_dir = Path(args.cnn_model)
    else:
        cam_dir = out / "cnn_cam" / "model"
        t0 = time.time()
        cnn = distillad.create_model("cnn_cam", teacher=args.teacher, cam="gradcam++", epochs=args.teacher_epochs,
                                     **common).fit(split.train)
        fit_s = time.time() - t0
        cnn.save(cam_dir)
        res = evaluate(cnn, split, out / "cnn_cam", speed=True, report=False, progress=False)
        rows.append(row(f"{args.teacher} + Grad-CAM++", res, fit_s))
    for sup in args.supervision.split(","):
        train = weak_boxes(split.train) if sup == "boxes" else split.train
        t0 = time.time()
        model = distillad.create_model(
            "onen", teacher=str(cam_dir), variant=args.variant, patch_size=args.patch_size, embed_dim=args.embed_dim,
            num_heads=args.num_heads, supervision=sup, epochs=args.epochs, optimizer=args.optimizer,
            **common).fit(train)
        fit_s = time.time() - t0
        model.save(out / f"onen_{sup}" / "model")
        res = evaluate(model, split, out / f"onen_{sup}", speed=sup == "none", report=False, progress=False)
        rows.append(row(f"OneN-{args.variant} ({sup}{', AdamW' if args.optimizer == 'adamw' else ''})", res, fit_s))
        # the classifier's own detection score, from the same model
        model.score = "defect_prob"
        if model.normal_class_ is not None:
            res2 = evaluate(model, split, None, speed=False, report=False, progress=False)
            rows.append(row(f"OneN-{args.variant} ({sup}{', AdamW' if args.optimizer == 'adamw' else ''}), "
                            f"score 1-p(normal)", res2, fit_s))
        (out / "summary.json").write_text(json.dumps({"command": " ".join(sys.argv), "split": split.name,
                                                       "classes": split.class_names, "rows": rows}, indent=2))
    lines = [f"`{' '.join(sys.argv)}`", "", f"{split.name}: {len(split.train)} train / {len(split.test)} test images, "
             f"classes {', '.join(split.class_names)}; protocol TR-AW", "",
             "| model | acc | pixel AUC | pixel AP | pixel F1-max | image AUC | image AP | image F1-max | ms/img | fit s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    f = lambda v: "-" if v is None else f"{100 * v:.2f}"  # noqa: E731
    for r in rows:
        lat = "-" if r["latency_ms_b1"] is None else f"{r['latency_ms_b1']:.1f}"
        lines.append(f"| {r['model']} | {f(r['accuracy'])} | {f(r['pixel_auroc'])} | {f(r['pixel_ap'])} | "
                     f"{f(r['pixel_f1_max'])} | {f(r['image_auroc'])} | {f(r['image_ap'])} | {f(r['image_f1_max'])} | "
                     f"{lat} | {r['fit_seconds']} |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["complexity", "run"])
    ap.add_argument("--data", choices=["mtsd", "deeppcb"], default="mtsd")
    ap.add_argument("--root", default="../shared/datasets/magnetic_tile")
    ap.add_argument("--setting", default="STD+G")
    ap.add_argument("--supervision", default="none,boxes,masks")
    ap.add_argument("--teacher", default="tf_efficientnet_lite0")
    ap.add_argument("--variant", default="S")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--patch-size", type=int, default=16)
    ap.add_argument("--embed-dim", type=int, default=768)
    ap.add_argument("--num-heads", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--teacher-epochs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--optimizer", default="adam", help="OneN's optimiser: adam (paper, L2 decay) or adamw")
    ap.add_argument("--cnn-model", help="a saved cnn_cam folder from an earlier run: the teacher, not retrained")
    ap.add_argument("--out", default="/tmp/onen/bench")
    args = ap.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("distillad.models.onen.training").setLevel(logging.INFO)
    complexity(args) if args.mode == "complexity" else run(args)


if __name__ == "__main__":
    main()
