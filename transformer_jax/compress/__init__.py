"""Model compression: `python -m transformer_jax.compress quantize|prune` (see __main__.py).

ops.py writes the compressed workdir, measure.py and report.py compare it with the
source; the numerics live in quant.py and sparsity.py, the storage in compressed.py.
"""
