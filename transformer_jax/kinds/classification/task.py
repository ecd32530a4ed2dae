"""Classification (encoder_classifier on text, vit on images): accuracy, precision, recall, F1."""

from __future__ import annotations

import json
import logging
import os

import jax
import numpy as np

from transformer_jax.data.splits import CorpusError
from transformer_jax.kinds import task as base
from transformer_jax.kinds.classification import images as images_lib, labelled_text
from transformer_jax.metrics import scores as evaluation


class _Classification(base.TaskBase):
  """What text and image classifiers share: labels, the batches of a split, the test figures.
  A subclass holds `data` (with validation and test splits) and turns a split into batches."""
  labels: list[str]
  majority_accuracy: float

  def _batches(self, split, batch_size: int, process_index: int, process_count: int):
    raise NotImplementedError

  def eval_batches(self, *, batch_size: int, process_index: int, process_count: int):
    return self._batches(self.data.validation, batch_size, process_index, process_count)

  def test_batches(self, batch_size: int, process_index: int, process_count: int):
    return self._batches(self.data.test, batch_size, process_index, process_count)

  def save_labels(self, workdir: str, is_writer: bool) -> None:
    """WORKDIR/labels.json: the class names by id, for tools that load the run (export_hf)."""
    if is_writer:
      os.makedirs(workdir, exist_ok=True)
      with open(os.path.join(workdir, base.LABELS_FILE), "w", encoding="utf-8") as f:
        json.dump(self.labels, f, ensure_ascii=False, indent=1)

  def final_test(self, run: base.Evaluator, params, step: int) -> dict[str, float]:
    del step
    sums = run.eval_sums(params, self.test_batches(run.local_batch_size, jax.process_index(),
                                                       jax.process_count()))
    scores = evaluation.classification_scores(np.asarray(sums["confusion_sum"]), self.labels)
    record = {f"test/{k}": scores[k] for k in ("accuracy", "f1", "precision", "recall")}
    record["test/majority_accuracy"] = self.majority_accuracy
    if run.primary:
      total = sum(c["support"] for c in scores["per_class"])
      print(f"Test set ({total} examples): accuracy {scores['accuracy']:.4f}, macro F1 "
            f"{scores['f1']:.4f} (always the most frequent training label: accuracy "
            f"{self.majority_accuracy:.4f})", flush=True)
      ranked = sorted(scores["per_class"], key=lambda c: -c["support"])
      for c in ranked[:10]:
        print(f"  {c['label']:>20}: support {c['support']:5d}, precision {c['precision']:.3f}, "
              f"recall {c['recall']:.3f}, F1 {c['f1']:.3f}", flush=True)
      if len(ranked) > 10:
        print(f"  ... and {len(ranked) - 10} smaller classes", flush=True)
    record["examples"] = [
        {"label": c["label"], "support": c["support"], "precision": round(c["precision"], 3),
         "recall": round(c["recall"], 3), "f1": round(c["f1"], 3)}
        for c in sorted(scores["per_class"], key=lambda c: -c["support"])[:10]]
    return record


class TextClassificationTask(_Classification):
  """(text, label) pairs -> token ids cut to max_target_length, one example per row."""

  def __init__(self, config, workdir: str, is_writer: bool):
    self.config = config
    self.data = labelled_text.load_labelled(config.data)
    self.labels = list(self.data.labels)
    self.num_classes = len(self.labels)
    logging.info("labelled text: %d train, %d validation, %d test, %d classes",
                 len(self.data.train), len(self.data.validation), len(self.data.test),
                 self.num_classes)
    self.tokenizer = base.load_tokenizer(config, workdir, lambda: (t for t, _ in self.data.train),
                                         is_writer, use_placeholders=False)
    self.vocab_size = self.tokenizer.vocab_size
    self.majority_accuracy = labelled_text.majority_baseline(self.data.train, self.data.test)
    self.save_labels(workdir, is_writer)

  def train_stream(self, *, global_batch_size: int, rows, seed: int):
    return labelled_text.ClassifyTrainStream(
        self.data.train, self.tokenizer, global_batch_size=global_batch_size, rows=rows,
        max_length=self.config.max_target_length, seed=seed)

  def _batches(self, split, batch_size, process_index, process_count):
    return labelled_text.classify_eval_batches(
        split, self.tokenizer, batch_size=batch_size,
        max_length=self.config.max_target_length, process_index=process_index,
        process_count=process_count)


class ImageClassificationTask(_Classification):
  """(image, label) -> float images in [0, 1], one per row."""

  def __init__(self, config, workdir: str, is_writer: bool):
    self.config = config
    self.data = images_lib.load_images(config.data)
    self.num_classes = self.data.num_classes
    self.labels = [str(i) for i in range(self.num_classes)]
    images = self.data.train[0]
    want = (config.data.image_size, config.data.image_size, config.data.num_channels)
    if images.shape[1:] != want:
      where = (", ".join(config.data.train_files) if config.data.source == "files"
               else f"config.data.source={config.data.source!r}")
      raise CorpusError(
          f"{where}: the images are {images.shape[1:]} (height, width, channels) but "
          f"config.data.image_size={config.data.image_size} and "
          f"config.data.num_channels={config.data.num_channels} say {want}")
    self.save_labels(workdir, is_writer)
    logging.info("images: %d train, %d validation, %d test, %d classes", len(images),
                 len(self.data.validation[0]), len(self.data.test[0]), self.num_classes)
    self.majority_accuracy = images_lib.majority_baseline(self.data.train[1], self.data.test[1])

  def train_stream(self, *, global_batch_size: int, rows, seed: int):
    images, labels = self.data.train
    return images_lib.ImageTrainStream(images, labels, global_batch_size=global_batch_size,
                                       rows=rows, seed=seed)

  def _batches(self, split, batch_size, process_index, process_count):
    images, labels = split
    return images_lib.image_eval_batches(images, labels, batch_size=batch_size,
                                         process_index=process_index, process_count=process_count)

