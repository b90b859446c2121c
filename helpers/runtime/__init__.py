"""Running a compressed file small and fast: sparse shared-weight layers (``sparse``), their numba
kernels (``sparse_kernels``), and side-by-side measurements against dense and int8 (``sparse_measure``).
Standard exports are ``helpers.export``."""
