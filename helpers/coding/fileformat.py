"""The compressed model file (``.dcz``): pruning + quantization + entropy coding (paper section 4).

Sparse layout (paper Fig. 2). A layer's surviving weights, in flattened C order, are stored as two
streams, each entropy-coded on its own (``helpers.coding.streams``): with a canonical Huffman code
(``helpers.coding.huffman``, the paper's choice) or with rANS and previous-symbol contexts
(``helpers.coding.rans``), whichever is smaller, tables included. Or (format version 5) a layer of at
most ``cabac.MAX_POSITIONS`` weights is coded whole by ``helpers.coding.cabac``: context-adaptive binary
arithmetic coding of its mask and indices, kept when it is at least ``cabac.MIN_GAIN`` smaller
than the two streams (trained LeNets' layers: 1-13 % smaller; see ``benchmarks/bench_nncodec.py``).
The streams:

* gap stream: for each survivor, ``position - previous position - 1`` (the first counts from -1),
  an integer in [0, M - 1] with M = 2**gap_bits - 1 (default gap_bits: 8 for conv, 5 for fc).
  A larger gap first emits FILLER entries, the reserved symbol M, each standing for a pruned
  position M further on. A filler carries no weight, so it has no entry in the index stream (the
  paper stores a zero weight there; since the gap symbol already marks it, that entry would only
  cost bits). The reader rebuilds the mask exactly: symbol s < M advances s + 1 and is a survivor,
  M advances M and is not;
* index stream: the codebook index of each survivor. Pruned weights have no index; the reader
  returns index 0 there (and the weight +0.0, as ``import_quantized`` computes it).

The codebook stored is the used part only: entries no survivor uses are dropped and the indices
renumbered, the kept entries in their order with their exact float32 bits, so every weight is
unchanged (a layer without survivors keeps its first entry, so ``codebook[0]`` stays valid). A
loaded layer so has k <= 2**bits entries; ``bits`` stays the width the layer was clustered with.
Saving a loaded model again writes the same bytes. (k-means with linear init leaves the centroids
inside the pruning gap empty: LeNet-5's conv layers use 152 and 168 of 256, so this saves 0.8 KB.)

A Huffman-coded stream dominated by one symbol (p > 1/2: the fillers of a 1 %-dense fc layer) is
coded as pairs of symbols when that is smaller, code table included: a symbol code cannot spend
under 1 bit on a symbol, which cost 7.7 % on VGG16's fc6 gaps, 0.4 % with pairs. rANS has no such
floor and conditions on the previous symbol (after a filler, gaps are distributed differently), so
it wins nearly every large stream (see ``benchmarks/bench_fileformat.py`` for the measured gain).

File layout (all integers little-endian)::

    0   8 B  magic  b"\\x89DCZ\\r\\n\\x1a\\n"  (PNG-style: detects text-mode mangling)
    8   2 B  format version (6);  10  2 B  reserved, 0;  12  4 B  H = header length
    16  H B  header: a zlib stream (level 9) of compact UTF-8 JSON: create_args, metadata
             (class_names, image_size, mean, std, ...), sync_interval (Huffman), lane_symbols
             (rANS), data_bytes, per layer its name, shape, bits, gap_bits, survivors and
             sections, per stream its coder and symbol count (Huffman: bit length, whether it is
             coded in pairs, code-length width), per raw tensor its name, dtype and shape.
             Inflated to at most MAX_HEADER_BYTES - 1 bytes: a longer
             one (a zlib bomb) is refused without inflating the rest.
    16+H     4 B  CRC32 of bytes [0, 16 + H)
    20+H     data region: sections back to back; every section is {offset (from the data region's
             start), length} (versions 1-3 add a crc32 each: redundant with the file's CRC32,
             and ~200 B of a LeNet-5 header). Per layer: codebook (float32, used entries), and per stream:
             code lengths (``huffman.pack_lengths``: 4 bits per symbol up to the last used one,
             or 8 bits when a code is 16 bits long; the stream's ``length_bits`` says which),
             sync table (uint16 lane lengths), bits (LSB-first); or for a rANS stream: model
             (``rans.pack_model``), lane table (uint16 words per lane), words (uint16). A
             context-coded layer has, instead of its two streams, one section: ``cabac.encode``'s
             bytes, with the index model (``index_context``) in its header entry.
             Raw tensors (biases, ...) in their dtype from an allowlist; a float32 tensor that is
             exactly int8 x 2**e (biases rounded by ``helpers.quantize.compact``) as int8 plus ``e``,
             and one of 16 values or more that is exactly float16 (normalization tensors rounded
             there) as float16 with ``"float16": true``.
    end-8    b"DCZE" + CRC32 of everything before it.

Version 5 (read, never written) is version 6 without float16 raw tensors. Version 4 (read, never
written) is version 5 without context-coded layers: writing with
``coders=("huffman", "rans")`` gives its data region byte for byte. Version 3 is version 4 with
a crc32 in every section and raw tensors in their own dtype only. Version 2 (read, never written)
is version 3 with Huffman streams only (no ``coder`` and
``lane_symbols`` keys). Version 1 (read, never written) differs from 2 only in that its header is
plain JSON and its code-length tables are one byte per symbol (and its codebooks may hold unused
entries). The JSON of a LeNet-5
header deflates about 3x (3.3 KB -> 1.1 KB): class names and the repeated section keys.

Reading trusts nothing: every length, offset, count and shape is checked against the file size and
the header before anything is allocated, and any damage raises ``CompressedFileError``. Loading
into a model checks the declared layers and tensors against the model before any stream is
decoded, so no stream decodes to more weights than the architecture has (a stream of a
probability-1 symbol costs 4 bytes a lane however long). Stored floats must be finite and within
``MAX_MAGNITUDE``; a weight may be stored once only (as a layer or as a raw tensor). Nothing is
ever unpickled.
"""

# The format is written by ``fileformat_write``, read by ``fileformat_read`` and loaded into a model by
# ``fileformat_load``, over the constants and sparse layout of ``fileformat_layout``; this module is
# their one public face.
from .fileformat_layout import (CODEBOOK_DTYPES, CODERS, CREATE_KEYS, DEFAULT_GAP_BITS, DTYPES, EXTENSION,
                                MAGIC, MAX_ELEMENTS, MAX_HEADER_BYTES, MAX_MAGNITUDE, READABLE_VERSIONS,
                                TRAILER, VERSION, CompressedFileError, Contents, SparseLayer, default_gap_bits,
                                gap_decode, gap_encode)
from .fileformat_load import _check_fits, load_compressed, open_for_model, plain_tensors, skeleton
from .fileformat_read import Declared, Parsed, declare, parse, read_compressed
from .fileformat_write import (_codebook_entry, check_metadata, encode_file, finest_int8_exponent, int8_exponent,
                               layer_coded_bytes, save_compressed, save_model, size_report)

__all__ = ["CODEBOOK_DTYPES", "CODERS", "CREATE_KEYS", "DEFAULT_GAP_BITS", "DTYPES", "EXTENSION", "MAGIC",
           "MAX_ELEMENTS", "MAX_HEADER_BYTES", "MAX_MAGNITUDE", "READABLE_VERSIONS", "TRAILER", "VERSION",
           "CompressedFileError", "Contents", "Declared", "Parsed", "SparseLayer", "check_metadata", "declare",
           "default_gap_bits", "encode_file", "finest_int8_exponent", "gap_decode", "gap_encode", "int8_exponent",
           "layer_coded_bytes", "load_compressed", "open_for_model", "parse", "plain_tensors",
           "read_compressed", "save_compressed", "save_model", "size_report", "skeleton",
           "_check_fits", "_codebook_entry"]  # the last two: for tests and helpers.quantize.compact
