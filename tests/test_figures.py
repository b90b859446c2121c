"""The notebooks' figures (helpers.figures) drawn from hand-made data: what each shows is checked on
the returned matplotlib objects, not by eye."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from helpers import figures, reporting


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt
    plt.close("all")


def test_history_draws_train_and_validation_curves():
    history = [{"epoch": e, "train_loss": 2.0 / e, "train_top1": 0.3 * e, "val_loss": 2.1 / e,
                "val_top1": 0.25 * e, "val_top5": 0.3 * e} for e in (1, 2, 3)]
    loss_ax, acc_ax = figures.plot_history(history, "net").axes
    np.testing.assert_allclose([line.get_ydata() for line in loss_ax.lines], [[2.0, 1.0, 2 / 3], [2.1, 1.05, 0.7]])
    assert len(acc_ax.lines) == 3 and acc_ax.get_ylim() == (0, 1)
    train_only = [{k: v for k, v in h.items() if not k.startswith("val")} for h in history]
    assert len(figures.plot_history(train_only).axes[0].lines) == 1


def test_confusion_rows_are_normalized_per_true_class():
    matrix = np.array([[3, 1], [0, 0]])
    image = figures.plot_confusion(matrix, ["a", "b"]).axes[0].images[0]
    np.testing.assert_allclose(image.get_array(), [[0.75, 0.25], [0.0, 0.0]])  # an empty row stays zero


def test_weight_histograms_one_panel_per_layer_and_nonzero_only():
    weights = {"a": torch.tensor([0.0, 0.0, 1.0, -1.0]), "b": torch.ones(3), "c": torch.zeros(2) + 0.5}
    fig = figures.plot_weight_histograms(weights, "t", nonzero_only=True, bins=4)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:3] == ["a (2)", "b (3)", "c (2)"]


def test_rounds_and_sensitivity_mark_the_baseline():
    rounds = [{"round": 1, "kept": 0.5, "after_pruning": 0.6, "after_retraining": 0.7},
              {"round": 2, "kept": 0.25, "after_pruning": 0.5, "after_retraining": 0.68}]
    ax = figures.plot_rounds(rounds, 0.72).axes[0]
    assert list(ax.lines[1].get_ydata()) == [0.7, 0.68] and list(ax.lines[2].get_ydata()) == [0.72, 0.72]
    assert [t.get_text() for t in ax.texts] == ["50.0% kept", "25.0% kept"]
    ax = figures.plot_sensitivity({"fc": [(0.9, 0.5), (0.5, 0.7)]}, 0.72).axes[0]
    assert list(ax.lines[0].get_xdata()) == [50.0, 90.0]  # sorted by sparsity, in percent


def test_pareto_skips_sizes_that_are_not_finite():
    rows = [{"stage": "baseline", "MB": 4.0, "top1": 0.9, "size": "file"},
            {"stage": "pruned", "MB": float("nan"), "top1": 0.89, "size": "computed"},
            {"stage": "compressed", "MB": 0.1, "top1": 0.88, "size": "file"}]
    ax = figures.plot_pareto({"net": rows}).axes[0]
    assert list(ax.lines[0].get_xdata()) == [4.0, 0.1] and ax.get_xscale() == "log"


def test_reporting_still_exports_the_figures():
    assert reporting.plot_history is figures.plot_history and reporting.plot_pareto is figures.plot_pareto
