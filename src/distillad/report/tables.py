"""Markdown tables: one evaluation (`metrics_markdown`) and several models side by side
(`bench_table`, used by `distillad bench`).

Metric values are fractions in [0, 1] printed with 4 decimals (papers print percentages: x100).
A metric that could not be computed is printed as "n/a"; the reason is in the result's notes.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

#: headline metrics, in table order
MAIN_METRICS = ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap",
                "pixel_f1_max", "aupro_30", "aupro_10", "aupro_5", "aupro_1")
#: defect-size quartile AUPRO and robustness rho (L2BT paper, eq. 4)
SIZE_METRICS = tuple(f"aupro_30_q{i}" for i in range(1, 5)) + tuple(f"aupro_5_q{i}" for i in range(1, 5)) \
    + ("rho_30", "rho_5")
#: default columns of `bench_table`
BENCH_METRICS = ("image_auroc", "pixel_auroc", "aupro_30")


def md_escape(text: Any) -> str:
    """Make a user string safe inside a markdown table cell."""
    s = str(text).replace("\\", "\\\\").replace("|", "\\|")
    return " ".join(s.split())


def fmt_value(v: Any, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int,)):
        return str(v)
    try:
        f = float(v)
    except (TypeError, ValueError):
        return md_escape(v)
    return "n/a" if not math.isfinite(f) else f"{f:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def metrics_table(rows: Sequence[tuple[str, dict]], keys: Sequence[str]) -> str | None:
    """Rows (name, flat metrics dict) x the given keys that at least one row has; None when
    no row has any of them."""
    keys = [k for k in keys if any(k in m for _, m in rows)]
    if not keys:
        return None
    return _table(["rows"] + list(keys), [[md_escape(name)] + [fmt_value(m.get(k)) for k in keys] for name, m in rows])


def _metric_rows(result: dict) -> list[tuple[str, dict]]:
    rows = [("all test images (pooled)", result.get("metrics") or {})]
    per_cat = result.get("per_category") or {}
    rows += [(f"category {c}", m) for c, m in per_cat.items() if c != "mean"]
    if "mean" in per_cat:
        rows.append(("mean of categories", per_cat["mean"]))
    return rows


def speed_lines(speed: dict | None, escape=md_escape) -> list[str]:
    """Bullet lines describing a result's speed / memory (`escape` makes strings safe for the target)."""
    if not speed:
        return ["Speed was not measured."]
    out = [f"- latency at batch 1: {fmt_value(speed.get('latency_ms_b1'), 2)} ms per image "
           f"(median over {speed.get('n_timed_b1', speed.get('n_timed'))} images)",
           f"- throughput at batch 8: {fmt_value(speed.get('throughput_ips_b8'), 2)} images/s "
           f"({speed.get('n_timed_b8', speed.get('n_timed'))} images)",
           f"- peak memory: {fmt_value(speed.get('peak_rss_mb'), 1)} MB process RSS during timed inference "
           f"({fmt_value(speed.get('peak_rss_delta_mb'), 1)} MB above the RSS before it)"]
    if speed.get("peak_cuda_mb") is not None:
        out.append(f"- peak CUDA memory allocated: {fmt_value(speed['peak_cuda_mb'], 1)} MB")
    if speed.get("what"):
        out.append(f"- measured: {escape(speed['what'])}")
    if speed.get("memory_measure"):
        out.append(f"- memory measure: {escape(speed['memory_measure'])}")
    return out


def summary_facts(result: dict) -> list[str]:
    """The plain-text facts heading both reports (metrics.md and report.html), unescaped."""
    facts = []
    t = result.get("teacher")
    if t:
        facts.append(f"teacher: {t.get('name')} (weights: {t.get('weights')})")
    facts.append(f"test images: {result.get('n_test')} ({result.get('n_test_normal')} normal, "
                 f"{result.get('n_test_anomalous')} anomalous)")
    if result.get("pixel_ground_truth"):
        facts.append(f"pixel ground truth: {result['pixel_ground_truth']}")
    if result.get("threshold") is not None:
        facts.append(f"threshold_ (99th percentile of normal training scores): {fmt_value(result['threshold'])}")
    return facts


def metrics_markdown(result: dict) -> str:
    """The markdown report of one `evaluate` result (what metrics.md holds)."""
    parts = [f"# {md_escape(result.get('model'))} on {md_escape(result.get('dataset'))}", ""]
    parts += [f"- {md_escape(f)}" for f in summary_facts(result)]
    parts += ["", "## Metrics", ""]
    rows = _metric_rows(result)
    main = metrics_table(rows, MAIN_METRICS)
    parts.append(main if main else "No metric could be computed (see notes).")
    size = metrics_table(rows, SIZE_METRICS)
    if size:
        parts += ["", "### AUPRO by defect size (quartiles of ground-truth region areas) and robustness rho", "", size]
    cls = result.get("classification")
    if cls:
        parts += ["", "## Classification", "", f"- accuracy: {fmt_value(cls.get('accuracy'))}"]
        per = cls.get("accuracy_per_class") or {}
        if per:
            parts += ["", _table(["class", "accuracy"], [[md_escape(k), fmt_value(v)] for k, v in per.items()])]
    parts += ["", "## Speed", ""] + speed_lines(result.get("speed"))
    notes = result.get("notes") or []
    if notes:
        parts += ["", "## Notes", ""] + [f"- {md_escape(n)}" for n in notes]
    return "\n".join(parts) + "\n"


def headline(result: dict) -> tuple[dict, bool]:
    """The metrics a summary shows for a result: the per-category mean when the test set had
    several categories (as multi-class papers report), else the pooled metrics. Returns
    (metrics, is_category_mean)."""
    per_cat = result.get("per_category") or {}
    if "mean" in per_cat:
        return per_cat["mean"], True
    return result.get("metrics") or {}, False


def bench_table(results: Sequence[dict], metrics: Sequence[str] = BENCH_METRICS) -> str:
    """Several `evaluate` results side by side: chosen metrics, classification accuracy when
    any model classifies, latency (batch 1), throughput (batch 8) and peak memory."""
    any_cls = any(r.get("classification") for r in results)
    header = ["model", "teacher", "data"] + list(metrics)
    if any_cls:
        header.append("accuracy")
    any_cx = any(r.get("complexity") for r in results)
    if any_cx:
        header += ["params (M)", "GFLOPs/img"]
    header += ["ms/img (b1)", "img/s (b8)", "peak RSS MB"]
    rows, any_mean = [], False
    for r in results:
        m, is_mean = headline(r)
        any_mean |= is_mean
        t = r.get("teacher") or {}
        s = r.get("speed") or {}
        row = [md_escape(r.get("bench_name") or r.get("model")) + (" *" if is_mean else ""), md_escape(t.get("name", "-")),
               md_escape(r.get("dataset"))]
        row += [fmt_value(m.get(k)) for k in metrics]
        if any_cls:
            row.append(fmt_value((r.get("classification") or {}).get("accuracy")))
        if any_cx:  # teacher + student parameters; inference FLOPs (1 multiply-add = 2 FLOPs)
            cx = r.get("complexity") or {}
            n = (cx.get("params_teacher") or 0) + (cx.get("params_student") or 0)
            row += [fmt_value(n / 1e6 if n else None, 2),
                    fmt_value(cx["flops_inference"] / 1e9 if cx.get("flops_inference") else None, 2)]
        row += [fmt_value(s.get("latency_ms_b1"), 2), fmt_value(s.get("throughput_ips_b8"), 2),
                fmt_value(s.get("peak_rss_mb"), 1)]
        rows.append(row)
    out = _table(header, rows)
    notes = ["Speed is end to end (preprocessing, model, maps restored to the original image size); "
             "peak RSS is the whole process during timed inference."]
    if any_mean:
        notes.insert(0, "* metrics are the mean over categories (the test set had several).")
    return out + "\n\n" + "\n".join(notes) + "\n"
