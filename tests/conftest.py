import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _jpeg_bytes(mode="RGB", size=(40, 30), seed=0):
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def messy_folder(tmp_path) -> Path:
    """Two classes of real-world oddities: three good images and three bad files in class 'b'."""
    root = tmp_path / "messy"
    (root / "a class").mkdir(parents=True)
    (root / "b").mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (20, 30, 4), dtype=np.uint8), "RGBA").save(root / "a class/rgba.png")
    Image.fromarray(rng.integers(0, 255, (20, 30), dtype=np.uint8), "L").convert("P").save(
        root / "a class/palette.png")
    (root / "a class/gray.jpg").write_bytes(_jpeg_bytes("L"))
    for i in range(4):  # good images so both classes can be split (4 each: one for val and test)
        (root / f"b/good{i}.jpg").write_bytes(_jpeg_bytes("RGB", seed=10 + i))
        (root / f"a class/good{i}.jpg").write_bytes(_jpeg_bytes("RGB", seed=20 + i))
    full = _jpeg_bytes("RGB", size=(64, 64), seed=3)
    (root / "b/truncated.jpg").write_bytes(full[: len(full) // 2])
    (root / "b/empty.jpg").write_bytes(b"")
    (root / "b/notes.jpg").write_text("this is not an image\n")
    return root
