"""What each small-model saving is worth in bytes: the same quantized weights written several ways.

    python benchmarks/bench_small_bytes.py RUN_DIR/MODEL     # a model folder holding quantized.pt and its .dcz

The quantized model (``quantized.pt``, before ``compact_storage`` if the run did not round it) is
written as a version-4 file as it is, then with its biases on the int8 x 2**e grid, its codebooks in
float16, and both (``helpers.quantize.compact``, every rounding accepted: this measures bytes, not accuracy).
The run's own ``.dcz`` gives the size on disk and its header bytes. The last line printed is JSON.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from helpers.quantize import compact, quantization
from helpers.coding import fileformat
from helpers import models  # noqa: E402


def written_size(model, metadata) -> int:
    with tempfile.TemporaryDirectory() as folder:
        return fileformat.save_model(model, Path(folder) / "model.dcz", metadata)


def main(folder: str) -> dict:
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
           "v4_as_is": written_size(fresh(), header["metadata"])}
    for kinds in (("biases",), ("codebooks",), ("codebooks", "biases")):
        model = fresh()
        compact.compact(model, lambda _: 1.0, kinds=kinds)
        out["v4_" + "_".join(kinds)] = written_size(model, header["metadata"])
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(json.dumps(main(sys.argv[1])))
