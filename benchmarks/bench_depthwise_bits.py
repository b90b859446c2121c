"""What a separate width for depthwise convolutions buys: a finished run's pruned model clustered with
every convolution at ``conv_bits``, then with its depthwise ones (``helpers.models.is_depthwise``) at
wider widths; validation accuracy before any centroid fine-tuning, and the file each writes.

    python benchmarks/bench_depthwise_bits.py RUN_DIR/MODEL --data-dir DATA [--conv-bits 6 --depthwise 7 8]

``metrics.json`` names the run's dataset and profile; its split and ``pruned.pt`` are used as they are.
The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from helpers import data, models, training  # noqa: E402
from helpers.coding import fileformat  # noqa: E402
from helpers.pipeline import config  # noqa: E402
from helpers.prune import pruning  # noqa: E402
from helpers.quantize import bit_allocation, quantization  # noqa: E402


def main(folder: str, data_dir: str, conv_bits: int, fc_bits: int, widths: list[int]) -> dict:
    folder = Path(folder)
    run = json.loads((folder / "metrics.json").read_text())
    settings = config.resolve_settings(run["dataset"], data_dir, run["model"], run["profile"], folder.parent)
    splits = data.load_splits_for(settings)
    val = data.loader(splits.val, settings["batch_size"])

    def pruned():
        model = models.create(run["model"], len(splits.class_names), splits.in_channels, settings["image_size"])
        pruning.load_pruned_state_dict(model, torch.load(folder / "pruned.pt", map_location="cpu", weights_only=True))
        return model

    out = {"pruned_val_top1": training.evaluate(pruned(), val, "cpu")["top1"], "conv_bits": conv_bits}
    for depthwise in [None, *widths]:
        model = pruned()
        quantization.quantize_model(model, bits=bit_allocation.default_bits(model, conv_bits, fc_bits, depthwise),
                                    init="linear")
        with tempfile.TemporaryDirectory() as tmp:
            size = fileformat.save_model(model, Path(tmp) / "model.dcz")
        out[f"depthwise_{depthwise or conv_bits}"] = {"val_top1": training.evaluate(model, val, "cpu")["top1"],
                                                      "bytes": size}
        print(depthwise or conv_bits, out[f"depthwise_{depthwise or conv_bits}"], flush=True)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="a finished run's model folder (pruned.pt, metrics.json)")
    parser.add_argument("--data-dir", required=True, help="the run's data")
    parser.add_argument("--conv-bits", type=int, default=6)
    parser.add_argument("--fc-bits", type=int, default=5)
    parser.add_argument("--depthwise", type=int, nargs="+", default=[7, 8], help="widths to try for depthwise convs")
    args = parser.parse_args()
    print(json.dumps(main(args.folder, args.data_dir, args.conv_bits, args.fc_bits, args.depthwise)))
