"""The figures the notebooks show: class counts and samples (01), training curves and the confusion
matrix (02), weight histograms, the sensitivity scan and the pruning rounds (03-04), accuracy against
size and each file's storage (07). Each takes plain data (lists, dicts, arrays) and returns a
matplotlib figure; matplotlib is imported only when a figure is drawn.
"""

from __future__ import annotations

import numpy as np


def plot_class_counts(class_names, counts, ax=None, title="Images per class"):
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(10, 3.5))[1]
    ax.bar(range(len(counts)), counts, color="tab:blue")
    ax.set_xticks(range(len(counts)), class_names, rotation=70, ha="right", fontsize=8)
    ax.set_ylabel("images")
    ax.set_title(title)
    return ax


def plot_samples(dataset, class_names, per_class=4, max_classes=None):
    """A grid with ``per_class`` images of each class (rows are classes); ``dataset`` yields PIL images."""
    import matplotlib.pyplot as plt

    targets = np.asarray(dataset.targets)
    classes = range(len(class_names))[:max_classes]
    fig, axes = plt.subplots(len(classes), per_class, figsize=(per_class * 1.3, len(classes) * 1.3),
                             squeeze=False)
    for row, label in enumerate(classes):
        members = np.flatnonzero(targets == label)[:per_class]
        for col in range(per_class):
            ax = axes[row, col]
            ax.axis("off")
            if col < len(members):
                img, _ = dataset[int(members[col])]
                ax.imshow(img, cmap="gray" if getattr(img, "mode", "") == "L" else None)
        axes[row, 0].set_title(class_names[label], fontsize=7, loc="left")
    fig.tight_layout()
    return fig


def plot_history(history, title=""):
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.5))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax_acc.plot(epochs, [h["train_top1"] for h in history], "o-", label="train top-1")
    if history and "val_loss" in history[0]:
        ax_loss.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
        ax_acc.plot(epochs, [h["val_top1"] for h in history], "o-", label="validation top-1")
        ax_acc.plot(epochs, [h["val_top5"] for h in history], "o--", label="validation top-5")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title=f"{title} loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title=f"{title} accuracy", ylim=(0, 1))
    ax_loss.legend()
    ax_acc.legend()
    fig.tight_layout()
    return fig


def plot_confusion(matrix, class_names, title="Confusion matrix (rows: true, normalized)"):
    import matplotlib.pyplot as plt

    norm = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(8, 7))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def plot_weight_histograms(weights: dict, title: str, nonzero_only=False, bins=100, max_layers=16):
    """One small histogram per layer (paper Fig. 4: pruning leaves a bimodal distribution)."""
    import matplotlib.pyplot as plt

    names = list(weights)[:max_layers]
    cols = min(4, len(names))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        w = weights[name].detach().flatten().float().cpu().numpy()
        if nonzero_only:
            w = w[w != 0]
        ax.hist(w, bins=bins, color="tab:blue")
        ax.set_title(f"{name} ({len(w):,})", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_sensitivity(scan: dict, baseline: float, title="Pruning sensitivity (one layer at a time)"):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in scan.items():
        xs, ys = zip(*sorted(curve))
        ax.plot([100 * x for x in xs], ys, "o-", ms=3, label=name)
    ax.axhline(baseline, color="k", ls="--", lw=1, label="baseline")
    ax.set(xlabel="weights pruned in that layer (%)", ylabel="validation top-1", title=title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def plot_rounds(rounds: list[dict], baseline: float, title="Accuracy through prune -> retrain rounds"):
    """``rounds``: dicts with ``round``, ``kept``, ``after_pruning`` and ``after_retraining`` accuracy."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    xs = [r["round"] for r in rounds]
    ax.plot(xs, [r["after_pruning"] for r in rounds], "v--", label="after pruning")
    ax.plot(xs, [r["after_retraining"] for r in rounds], "o-", label="after retraining")
    ax.axhline(baseline, color="k", ls="--", lw=1, label="baseline")
    for r in rounds:
        ax.annotate(f"{r['kept']:.1%} kept", (r["round"], r["after_retraining"]), fontsize=7,
                    textcoords="offset points", xytext=(4, 4))
    ax.set(xlabel="round", ylabel="validation top-1", title=title, xticks=xs)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_pareto(tables: dict[str, list[dict]], title="Accuracy vs size"):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for model, rows in tables.items():
        rows = [r for r in rows if np.isfinite(r["MB"])]
        line, = ax.plot([r["MB"] for r in rows], [r["top1"] for r in rows], "-", alpha=0.4)
        for r in rows:
            measured = r["size"] == "file"
            ax.plot(r["MB"], r["top1"], "o" if measured else "s", color=line.get_color(),
                    mfc=line.get_color() if measured else "none")
            ax.annotate(r["stage"], (r["MB"], r["top1"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        line.set_label(model)
    ax.set_xscale("log")
    ax.set(xlabel="size (MB, log scale; hollow squares are computed format sizes)", ylabel="test top-1",
           title=title)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_storage_breakdown(reports: dict[str, list[dict]]):
    """Per layer: bytes of Huffman-coded weight indices vs relative positions (paper Fig. 11 style)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(reports), figsize=(4.5 * len(reports), 3.6), squeeze=False)
    for ax, (model, report) in zip(axes[0], reports.items()):
        layers = report[:-1]
        kept = [r["weights"] * r["kept_pct"] / 100 for r in layers]
        weight_b = [k * r["weight_bits_pqh"] / 8 / 1e3 for k, r in zip(kept, layers)]
        index_b = [k * r["index_bits_pqh"] / 8 / 1e3 for k, r in zip(kept, layers)]
        x = np.arange(len(layers))
        ax.bar(x, weight_b, label="weights (codebook indices)")
        ax.bar(x, index_b, bottom=weight_b, label="sparse index (gaps)")
        ax.set_xticks(x, [r["layer"] for r in layers], rotation=70, fontsize=7)
        ax.set(ylabel="kB in the file", title=model)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
