"""Compression ratio against accuracy, one point per pruning round of a finished run (several budgets).

    python benchmarks/ratio_curve.py --dataset fashion-mnist --data-dir DIR --model lenet300 \\
        --profile paper --out RUN [--set FIELD=VALUE ...] [--from-round N] [--plot docs/curve.png]

Iterative pruning leaves one checkpoint per round (``pruned_round<r>.pt``; the runner keeps them with
``--keep-checkpoints``), each a model pruned to
a smaller budget and retrained: the points of a ratio-accuracy curve without training anything
again. For every round from ``--from-round`` (default: the last planned round, ``prune_rounds``)
on, including extra rounds the run undid, this script takes the run's next stages as they are
(``pipeline.quantize`` with the run's settings, then ``pipeline.encode``) into
``RUN/MODEL/curve/round<r>/`` (resumable like any stage), and reports per round the weights kept,
test accuracy pruned and from the file, and the file's ratio. Use the ``--set`` values the run was
made with: the stages refuse a folder made with other settings. The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from helpers.pipeline import config
from helpers import data, models, pipeline, reporting, run, training
from helpers.prune import dead_units, pruning  # noqa: E402
from helpers.io import atomic_torch_save  # noqa: E402


def curve_point(r: int, source: Path, settings: dict, splits, loaders, device) -> dict:
    """Quantize and encode round ``r``'s checkpoint in its own folder; the point's record."""
    train, val, test = loaders
    folder = source / "curve" / f"round{r}"
    folder.mkdir(parents=True, exist_ok=True)
    new = lambda: models.create(settings["model_name"], len(splits.class_names), splits.in_channels,
                                settings["image_size"])
    pruned = new()
    pruning.load_pruned_state_dict(pruned, torch.load(source / f"pruned_round{r}.pt", weights_only=True))
    pruned.to(device)
    if settings["remove_dead_units"]:  # as prune_and_retrain does after its last round
        dead_units.remove_dead_units(pruned, next(iter(val))[0].to(device))
    if not (folder / "pruned.pt").exists():
        atomic_torch_save(pruned.state_dict(), folder / "pruned.pt")
    metadata = {"class_names": splits.class_names, "image_size": settings["image_size"],
                "mean": list(splits.mean), "std": list(splits.std), "dataset": settings["dataset"]}
    quantized = pipeline.quantize(new(), train, val, settings, folder, test_loader=test, device=device)
    encoded = pipeline.encode(new(), settings, folder, metadata=metadata, test_loader=test, device=device)
    record = json.loads((source / f"pruned_round{r}.json").read_text())
    return {"round": r, "kept": pruning.total_kept_fraction(pruned), "val_after_retraining": record["after_retraining"],
            "pruned_test": training.evaluate(pruned, test, device)["top1"], "bits": quantized["bits"],
            "file_test": encoded["test_accuracy"], "file_bytes": encoded["size_bytes"],
            "ratio": encoded["compression_ratio"]}


def plot(points: list[dict], baseline: float, title: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p["ratio"] for p in points], [100 * p["file_test"] for p in points], "o-", label="from the file")
    for p in points:
        ax.annotate(f"{100 * p['kept']:.1f}%", (p["ratio"], 100 * p["file_test"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    ax.axhline(100 * baseline, color="k", ls="--", lw=1, label="dense baseline")
    ax.axhline(100 * baseline - 0.3, color="tab:red", ls=":", lw=1, label="baseline - 0.3 points")
    ax.set(xlabel="compression ratio (dense fp32 / file)", ylabel="test top-1 (%)", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--model", required=True)
    parser.add_argument("--profile", required=True)
    parser.add_argument("--out", required=True, help="the finished run's folder (helpers.run --out)")
    parser.add_argument("--set", nargs="+", default=[], dest="overrides", metavar="FIELD=VALUE")
    parser.add_argument("--from-round", type=int, default=None)
    parser.add_argument("--plot", default=None, help="write the curve as a PNG here")
    args = parser.parse_args(argv)
    settings = config.resolve_settings(args.dataset, args.data_dir, args.model, args.profile, args.out, 0,
                                       run.parse_overrides(args.overrides))
    source = settings["model_dir"]
    rounds = sorted(int(p.stem.removeprefix("pruned_round")) for p in source.glob("pruned_round*.pt")
                    if p.stem.removeprefix("pruned_round").isdigit())
    first = args.from_round or settings["prune_rounds"]
    if not rounds or rounds[-1] < first:
        sys.exit(f"{source} has no pruned_round<r>.pt from round {first} on: run notebooks 02-04 there first, "
                 "with --keep-checkpoints (the runner removes a finished stage's round files otherwise)")
    device = training.pick_device()
    splits = data.load_splits_for(settings)
    bs = settings["batch_size"]
    loaders = (data.loader(splits.train, bs, shuffle=True, seed=settings["seed"]), data.loader(splits.val, bs),
               data.loader(splits.test, bs))
    points = [curve_point(r, source, settings, splits, loaders, device) for r in rounds if r >= first]
    baseline = reporting.read_metrics(source)["stages"]["baseline"]["test_accuracy"]
    for p in points:
        print(f"round {p['round']}: kept {p['kept']:.2%}, test {p['pruned_test']:.2%} pruned, {p['file_test']:.2%} "
              f"from the file ({p['file_test'] - baseline:+.2%} vs baseline), {p['file_bytes']:,} B, {p['ratio']:.1f}x")
    if args.plot:
        plot(points, baseline, f"{settings['model_name']} on {settings['dataset']}", args.plot)
    return {"model": settings["model_name"], "baseline_test": baseline, "points": points}


if __name__ == "__main__":
    print(json.dumps(main()))
