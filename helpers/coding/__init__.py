"""Entropy coding and the compressed file (paper §4): canonical Huffman (``huffman``), rANS
(``rans``), the choice between them per stream (``streams``), context-adaptive coding of whole
layers (``cabac``), and the ``.dcz`` format (``fileformat``, over ``fileformat_layout``,
``fileformat_read``, ``fileformat_load`` and ``fileformat_write``)."""
