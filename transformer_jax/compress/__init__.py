"""Model compression: the stored forms, and `python -m transformer_jax.compress quantize|prune`.

The stored forms sit low in the layers (the models use them): quant.py (per-channel
int8/int4 weights, fake quantization), sparsity.py (magnitude masks and their schedule),
stored.py (compressed parameters as stored: integers and scales, non-zeros and bitmasks).
The command is the top layer: __main__.py, ops.py (writes the compressed workdir),
measure.py and report.py (compare it with the source).
"""
