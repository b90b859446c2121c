"""What each small-model saving is worth in bytes: the same quantized weights written several ways.

    python benchmarks/bench_small_bytes.py RUN_DIR/MODEL     # a model folder holding quantized.pt and its .dcz
    python benchmarks/bench_small_bytes.py RUN_DIR/MODEL --data-dir DATA   # and what compact_storage keeps

The quantized model (``quantized.pt``, before ``compact_storage`` if the run did not round it) is
written as it is (the current format version), then with its biases on the int8 x 2**e grid, its
codebooks in float16, its normalization tensors in float16, and all three (``helpers.quantize.compact``,
every rounding accepted: this measures bytes, not accuracy). The run's own ``.dcz`` gives the size on
disk and its header bytes. With ``--data-dir`` (the run's data), ``compact_storage`` is also run as
the pipeline runs it, each rounding kept only when validation accuracy does not drop, on the run's own
split (``metrics.json`` names the dataset and profile): its record, the file it writes and that file's
test accuracy. The last line printed is JSON.
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

from helpers.quantize import compact, quantization  # noqa: E402
from helpers.coding import fileformat  # noqa: E402
from helpers import data, models, training  # noqa: E402
from helpers.pipeline import config  # noqa: E402


def written_size(model, metadata) -> int:
    with tempfile.TemporaryDirectory() as folder:
        return fileformat.save_model(model, Path(folder) / "model.dcz", metadata)


def accepted_roundings(folder: Path, data_dir: str, model, metadata) -> dict:
    """``compact_storage`` as the pipeline runs it on ``model``: each rounding kept only when the run's
    validation accuracy does not drop; then the file it writes and its test accuracy."""
    run = json.loads((folder / "metrics.json").read_text())
    settings = config.resolve_settings(run["dataset"], data_dir, run["model"], run["profile"], folder.parent)
    splits = data.load_splits_for(settings)
    val, test = (data.loader(split, settings["batch_size"]) for split in (splits.val, splits.test))
    record = compact.compact(model, lambda m: training.evaluate(m, val, "cpu")["top1"])
    return {"compact_storage": record, "bytes": written_size(model, metadata),
            "test_accuracy": training.evaluate(model, test, "cpu")["top1"]}


def main(folder: str, data_dir: str | None = None) -> dict:
    folder = Path(folder)
    files = sorted(folder.glob("*.dcz"))
    if not files or not (folder / "quantized.pt").exists():
        sys.exit(f"{folder} needs quantized.pt and a .dcz file (a model folder of a finished run)")
    parsed = fileformat.parse(files[0].read_bytes())
    header = parsed.header

    def fresh():
        model = models.create(**header["create_args"])
        quantization.load_quantized_state_dict(model, torch.load(folder / "quantized.pt", weights_only=True))
        return model

    out = {"file": str(files[0]), "version_on_disk": int.from_bytes(files[0].read_bytes()[8:10], "little"),
           "bytes_on_disk": parsed.file_bytes, "header_bytes_on_disk": parsed.file_bytes - header["data_bytes"],
           "as_is": written_size(fresh(), header["metadata"])}
    for kinds in (("biases",), ("codebooks",), ("norms",), ("codebooks", "biases", "norms")):
        model = fresh()
        compact.compact(model, lambda _: 1.0, kinds=kinds)
        out["_".join(kinds)] = written_size(model, header["metadata"])
    if data_dir is not None:
        out["accepted"] = accepted_roundings(folder, data_dir, fresh(), header["metadata"])
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="a finished run's model folder (quantized.pt and a .dcz)")
    parser.add_argument("--data-dir", help="the run's data: also run compact_storage's accuracy trials")
    args = parser.parse_args()
    print(json.dumps(main(args.folder, args.data_dir)))
