"""Trained quantization (paper §3): per-layer k-means weight sharing with trainable centroids
(``quantization``, over the 1-D k-means of ``kmeans``), per-layer widths (``bit_allocation``),
float16 codebooks and normalization tensors and int8 biases where validation allows (``compact``),
and the int8 row the project replaced (``int8``)."""
