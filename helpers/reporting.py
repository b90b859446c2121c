"""Results: ``metrics.json`` per model, image and class statistics, tables, the comparison of notebook 07
and ``dc-report``. The figures are in ``helpers.figures``.

``metrics.json`` has the shape ``{"dataset", "model", "profile", "stages": {stage: {...}}}`` with
accuracies as fractions; every notebook adds its own stage (baseline, pruned, quantized, int8,
compressed) and leaves the others alone.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from .io import atomic_write_text
# the figures lived here before helpers.figures: code that calls reporting.plot_* keeps working
from .figures import (plot_class_counts, plot_confusion, plot_history, plot_pareto, plot_rounds,  # noqa: F401
                      plot_samples, plot_sensitivity, plot_storage_breakdown, plot_weight_histograms)

STAGES = ("baseline", "int8", "pruned", "quantized", "compressed", "dense_control")


def read_metrics(model_dir) -> dict:
    path = Path(model_dir) / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else {}


def update_metrics(model_dir, stage: str, values: dict, dataset: str, model: str, profile: str,
                   overrides: dict | None = None) -> dict:
    """Merge one stage's results into ``model_dir/metrics.json`` (atomically) and return the whole.

    ``overrides`` (profile fields the run changed) are kept per stage, so a table can say so.
    """
    if stage not in STAGES:
        raise ValueError(f"Unknown stage {stage!r}; use one of {', '.join(STAGES)}.")
    metrics = read_metrics(model_dir)
    metrics.update({"dataset": dataset, "model": model, "profile": profile})
    metrics.setdefault("stages", {})[stage] = _jsonable({**values, **({"overrides": overrides} if overrides else {})})
    atomic_write_text(Path(model_dir) / "metrics.json", json.dumps(metrics, indent=2))
    return metrics


def write_json(path, values) -> Path:
    return atomic_write_text(path, json.dumps(_jsonable(values), indent=2))


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


# ----------------------------------------------------------------------------- data exploration

def image_statistics(root, items) -> dict:
    """Counts of format/colour mode and the width/height of every image (headers only, fast)."""
    from PIL import Image

    modes, sizes = Counter(), []
    for rel, _ in items:
        with Image.open(Path(root) / rel) as img:
            modes[f"{img.format} {img.mode}"] += 1
            sizes.append(img.size)
    sizes = np.array(sizes).reshape(-1, 2)
    return {"modes": dict(modes.most_common()), "widths": sizes[:, 0].tolist(),
            "heights": sizes[:, 1].tolist()}


# ----------------------------------------------------------------------------- training results

def confusion_matrix(preds, trues, num_classes) -> np.ndarray:
    """Rows are true classes, columns predicted."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(trues), np.asarray(preds)), 1)
    return matrix


def per_class_accuracy(matrix: np.ndarray) -> np.ndarray:
    totals = matrix.sum(axis=1)
    return np.divide(np.diag(matrix), totals, out=np.zeros(len(matrix)), where=totals > 0)


def majority_class_fraction(targets) -> float:
    counts = np.bincount(np.asarray(targets))
    return float(counts.max() / counts.sum())


# ----------------------------------------------------------------------------- compression stages

def format_table(rows: list[dict], formats: dict | None = None) -> str:
    """A plain-text table of ``rows`` (dicts with the same keys); ``formats`` maps column -> format."""
    formats = formats or {}
    if not rows:
        return ""
    columns = list(rows[0])

    def cell(row, col):
        value = row.get(col, "")
        if col in formats and isinstance(value, (int, float)):
            return formats[col].format(value)
        if isinstance(value, float):
            return f"{value:.4g}"
        return f"{value:,}" if isinstance(value, int) else str(value)

    body = [[cell(r, c) for c in columns] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) for i, c in enumerate(columns)]
    line = lambda cells: "  ".join(x.rjust(w) if i else x.ljust(w) for i, (x, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(columns), line(["-" * w for w in widths]), *map(line, body)])


# ----------------------------------------------------------------------------- comparison (notebook 07)

# Deep Compression, Table 1: compression rate of pruning + quantization + Huffman coding.
PAPER_RATIOS = {"lenet300": 40, "lenet5": 39, "alexnet": 35, "vgg16": 49}


def collect_metrics(run_dir) -> dict[str, dict]:
    """Every ``<model>/metrics.json`` under a run folder, by model name."""
    found = {}
    for path in sorted(Path(run_dir).glob("*/metrics.json")):
        metrics = json.loads(path.read_text())
        found[metrics.get("model", path.parent.name)] = metrics
    return found


def run_failures(run_dir) -> dict[str, dict]:
    """Models whose notebooks failed in the run's last invocation for them (``runner.json``), by name.

    Each value says which step failed, the error and its message, and the executed notebook to open.
    """
    path = Path(run_dir) / "runner.json"
    try:
        models = json.loads(path.read_text()).get("models", {}) if path.exists() else {}
    except (OSError, ValueError):
        return {}
    return {m: s for m, s in models.items() if isinstance(s, dict) and s.get("status") == "failed"}


def result_warnings(metrics: dict) -> list[str]:
    """What makes a model's numbers meaningless: a missing stage, or accuracy at chance level."""
    stages, notes = metrics.get("stages", {}), []
    missing = [s for s in ("baseline", "pruned", "quantized", "compressed") if s not in stages]
    if missing and len(missing) < 4:
        notes.append(f"no {', '.join(missing)} stage yet")
    classes = len(stages.get("baseline", {}).get("per_class_accuracy", {}))
    if classes > 1:
        chance = 1 / classes
        for stage in ("baseline", "compressed"):
            accuracy = stages.get(stage, {}).get("test_accuracy")
            if accuracy is not None and accuracy <= 1.5 * chance:
                notes.append(f"{stage} top-1 {accuracy:.1%} is at chance level ({chance:.1%} for {classes} "
                             "classes): the model learned nothing, so its size ratio means nothing")
    return notes


def status_lines(run_dir, all_metrics: dict | None = None) -> list[str]:
    """One line per failed model and per model whose results are incomplete or at chance level."""
    all_metrics = collect_metrics(run_dir) if all_metrics is None else all_metrics
    lines = [f"{model}: FAILED in {f.get('step', '?')}: {f.get('error', '')}: {f.get('message', '')} "
             f"(open {f.get('notebook', '?')})" for model, f in run_failures(run_dir).items()]
    for model, metrics in all_metrics.items():
        lines += [f"{model}: {note}" for note in result_warnings(metrics)]
    return lines


def stage_sizes(metrics: dict, size_report: list[dict] | None) -> dict[str, float]:
    """Bytes per stage: measured where a file exists (fp32, int8, the .dcz), else computed.

    ``pruned`` counts kept weights as fp32 values plus their fixed-width relative indices, and
    ``quantized`` the P+Q column of the size report (indices at the layer's bits plus codebooks);
    both add the fp32 biases. These two are sizes of a format, not of a file on disk.
    """
    stages = metrics.get("stages", {})
    sizes = {k: stages[k]["size_bytes"] for k in ("baseline", "int8", "compressed")
             if k in stages and "size_bytes" in stages[k]}
    if size_report:
        layers, total = size_report[:-1], size_report[-1]
        biases = total.get("raw_tensor_bytes", 0)
        dense_weight_bits = 32 * total["weights"]
        sizes["quantized"] = total["compress_pq_pct"] / 100 * dense_weight_bits / 8 + biases
        kept = sum(r["weights"] * r["kept_pct"] / 100 for r in layers)
        gap_bits = sum(r["weights"] * r["kept_pct"] / 100 * r["index_bits_pq"] for r in layers)
        sizes["pruned"] = (32 * kept + gap_bits) / 8 + biases
    return sizes


def stage_table(metrics: dict, size_report: list[dict] | None) -> list[dict]:
    stages, sizes = metrics.get("stages", {}), stage_sizes(metrics, size_report)
    dense = sizes.get("baseline")
    rows = []
    sizes.setdefault("dense_control", dense)  # the dense model trained as long as the pruned one
    for stage in ("baseline", "dense_control", "int8", "pruned", "quantized", "compressed"):
        if stage in stages:
            size = sizes.get(stage)
            rows.append({"stage": stage, "top1": stages[stage]["test_accuracy"],
                         "top5": stages[stage].get("test_top5", float("nan")),
                         "MB": size / 1e6 if size else float("nan"),
                         "ratio": dense / size if size and dense else float("nan"),
                         "size": "file" if stage in ("baseline", "dense_control", "int8", "compressed")
                         else "computed"})
    return rows


def markdown_table(rows: list[dict], formats: dict | None = None) -> str:
    formats = formats or {}
    if not rows:
        return ""
    cols = list(rows[0])
    fmt = lambda c, v: formats[c].format(v) if c in formats and isinstance(v, (int, float)) else (
        f"{v:,}" if isinstance(v, int) else f"{v:.4g}" if isinstance(v, float) else str(v))
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(c, r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    """``python -m helpers.reporting RUN_DIR``: the run's results as Markdown tables (for the README)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m helpers.reporting", description=main.__doc__)
    parser.add_argument("run_dir")
    parser.add_argument("--layers", nargs="*", default=[], help="models whose per-layer size table to print")
    args = parser.parse_args(argv)
    rows = []
    for model, metrics in collect_metrics(args.run_dir).items():
        report_path = Path(args.run_dir) / model / "size_report.json"
        report = json.loads(report_path.read_text()) if report_path.exists() else None
        for r in stage_table(metrics, report):
            rows.append({"network": model, **r})
    print(markdown_table(rows, {"top1": "{:.2%}", "top5": "{:.2%}", "MB": "{:.3f}", "ratio": "{:.1f}×"}))
    for line in status_lines(args.run_dir):
        print(f"\n**{line}**")
    from .pipeline import provenance  # here, not at the top: the pipeline's stages import this module

    for path in sorted(Path(args.run_dir).glob("*/metrics.json")):
        print(f"\n{path.parent.name}: {provenance.in_one_phrase(path.parent)}")
    for model in args.layers:
        report = json.loads((Path(args.run_dir) / model / "size_report.json").read_text())
        cols = ["layer", "weights", "kept_pct", "weight_bits_pq", "weight_bits_pqh", "index_bits_pq",
                "index_bits_pqh", "compress_pq_pct", "compress_pqh_pct"]
        print(f"\n{model}:\n")
        print(markdown_table([{c: ("" if r.get(c) is None else r[c]) for c in cols} for r in report],
                             {"kept_pct": "{:.1f}%", "weight_bits_pqh": "{:.2f}", "index_bits_pqh": "{:.2f}",
                              "compress_pq_pct": "{:.2f}%", "compress_pqh_pct": "{:.2f}%"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
