"""A synthetic global batch of full-length rows for a program's batch shapes (the
step benchmarks: every position real, one segment per row)."""

import numpy as np


def synthetic_batch(progs, config, vocab_size: int) -> dict:
  rng = np.random.default_rng(0)
  out = {}
  for key, spec in progs.batch_shapes.items():
    if key.endswith("_segment_ids"):
      out[key] = np.ones(spec.shape, np.int32)
    elif key.endswith("_positions"):
      out[key] = np.broadcast_to(np.arange(spec.shape[1], dtype=np.int32), spec.shape).copy()
    elif key == "label":
      out[key] = rng.integers(0, max(config.model.num_classes, 2), spec.shape, dtype=np.int32)
    elif spec.dtype == np.float32:
      out[key] = rng.random(spec.shape, dtype=np.float32)
    else:
      out[key] = rng.integers(3, vocab_size, spec.shape, dtype=np.int32)
  return progs.global_batch(out)
