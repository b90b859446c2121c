"""Forged files for the reader's tests: a valid file taken apart, edited and put back together
with every CRC made valid, so that only the reader's own checks stand between it and the edit."""

import json
import struct
import zlib

import numpy as np

from helpers.coding import fileformat as F


def split(blob):
    hlen = struct.unpack("<I", blob[12:16])[0]
    return json.loads(zlib.decompress(blob[16:16 + hlen])), bytearray(blob[20 + hlen:-8])


def frame(header_bytes, data, version=F.VERSION):
    """A file from raw header bytes (as stored: compressed for version 2) and a data region,
    with the header and file CRCs made valid."""
    head = F.MAGIC + struct.pack("<HHI", version, 0, len(header_bytes)) + header_bytes
    body = head + struct.pack("<I", zlib.crc32(head)) + bytes(data) + F.TRAILER
    return body + struct.pack("<I", zlib.crc32(body))


def join(header, data, recrc=True):
    """A file from a (possibly edited) header and data region, with every CRC made valid again."""
    if recrc:
        for sec in _sections(header):
            sec["crc32"] = zlib.crc32(bytes(data[sec["offset"]:sec["offset"] + sec["length"]]))
    return frame(zlib.compress(json.dumps(header).encode(), 9), data)


def _sections(header):
    for d in header.get("layers", []) if isinstance(header.get("layers"), list) else []:
        yield d["codebook"]
        if "cabac" in d:
            yield d["cabac"]["data"]
        for key in ("index", "gap") if "cabac" not in d else ():
            yield from (d[key][s] for s in ("lengths", "model", "sync", "data") if s in d[key])
    yield from header["tensors"]


def edited(blob, edit):
    header, data = split(blob)
    edit(header, data)
    return join(header, data)


def with_metadata(blob, metadata: dict) -> bytes:
    """``blob`` with its header's metadata updated, CRCs valid (the writer would refuse bad metadata)."""
    return edited(blob, lambda header, data: header["metadata"].update(metadata))


def with_codebook_value(blob, value: float, layer: int = 0) -> bytes:
    """``blob`` with the first codebook entry of one layer set to ``value``, CRCs valid."""
    def edit(header, data):
        entry = header["layers"][layer]
        dtype = np.float16 if entry.get("codebook_dtype") == "float16" else np.float32
        offset = entry["codebook"]["offset"]
        data[offset:offset + np.dtype(dtype).itemsize] = np.array([value], dtype).tobytes()
    return edited(blob, edit)

