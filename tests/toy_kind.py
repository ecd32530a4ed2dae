"""A throwaway model kind, registered and configured in this one file.

`python train.py --config=tests/toy_kind.py` trains it through the same code
path as the built-in kinds: loading this config file registers the kind, and
nothing in the package knows of it. The task: rows of 8 random tokens; the
label is the first token modulo 3, which a model that looks at positions can
learn (a majority guess scores about 1/3).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from transformer_jax import kinds
from transformer_jax.config import default_config
from transformer_jax.data import streams
from transformer_jax.metrics import objectives

LENGTH, TOKENS, CLASSES = 8, 12, 3
NAME = "toy_first_token"


class FirstTokenModel(nn.Module):
  """Token embeddings, flattened over positions, an MLP, class logits."""
  config: object  # the derived TransformerConfig; only emb_dim and mlp_dim are used.

  @nn.compact
  def __call__(self, tokens_BL):
    x_BLD = nn.Embed(TOKENS, self.config.emb_dim)(tokens_BL)
    x_BF = x_BLD.reshape(x_BLD.shape[0], -1)
    h_BH = nn.relu(nn.Dense(self.config.mlp_dim)(x_BF))
    return nn.Dense(CLASSES)(h_BH).astype(jnp.float32)


def _examples(n: int, seed: int) -> list[tuple[np.ndarray, int]]:
  tokens = np.random.default_rng(seed).integers(1, TOKENS, (n, LENGTH)).astype(np.int32)
  return [(row, int(row[0] % CLASSES)) for row in tokens]


def _row(example) -> dict[str, np.ndarray]:
  tokens, label = example
  return {"inputs": tokens, "label": np.int32(label)}


def _batches(examples, batch_size: int, process_index: int, process_count: int):
  mine = [examples[i] for i in streams.process_shard(len(examples), process_index,
                                                     process_count)]
  out = []
  for start in range(0, len(mine), batch_size):
    rows = [_row(e) for e in mine[start:start + batch_size]]
    batch = {k: np.stack([r[k] for r in rows]) for k in ("inputs", "label")}
    out.append(streams.pad_batch(batch, batch_size, fill={"label": -1}))
  return out


class FirstTokenTask:
  """Synthetic rows; kinds.task.Task through duck typing alone."""
  vocab_size = 0
  num_classes = CLASSES

  def __init__(self, config, workdir: str, is_writer: bool):
    del workdir, is_writer
    self.train = _examples(2000, seed=1)
    self.validation = _examples(200, seed=2)
    self.test = _examples(300, seed=3)
    self.config = config

  def train_stream(self, *, global_batch_size, rows, seed):
    def row_dataset(examples, seed):
      return examples.shuffle(seed=seed).repeat(None).map(_row).to_iter_dataset(
          streams.ROW_READ_OPTIONS)
    return streams.RowStreams(self.train, row_dataset, global_batch_size=global_batch_size,
                              rows=rows, seed=seed)

  def eval_batches(self, *, batch_size, process_index, process_count):
    return _batches(self.validation, batch_size, process_index, process_count)

  def extra_eval(self, run, params):
    del run, params
    return {}

  def final_test(self, run, params, step):
    del step
    sums = run.eval_sums(params, _batches(self.test, run.local_batch_size,
                                          jax.process_index(), jax.process_count()))
    labels = np.array([label for _, label in self.test])
    majority = float(np.mean(labels == np.bincount(labels).argmax()))
    return {"test/accuracy": float(sums["correct_sum"] / sums["weight_sum"]),
            "test/majority_accuracy": majority}


KIND = kinds.register(kinds.ModelKind(
    name=NAME,
    description="toy: the first token modulo 3",
    model=FirstTokenModel,
    batch_shapes=lambda config, b: {"inputs": jax.ShapeDtypeStruct((b, LENGTH), jnp.int32),
                                    "label": jax.ShapeDtypeStruct((b,), jnp.int32)},
    model_inputs=lambda batch: {"tokens_BL": batch["inputs"]},
    objective=objectives.classification_objective,
    eval_sums=objectives.classification_eval,
    eval_metrics=lambda config: ("loss", "accuracy"),
    task=FirstTokenTask,
    data_sources=("synthetic",),
    unit="examples",
    count_units=objectives.count_rows,
    uses_vocab=False,
    uses_classes=True,
    padding={"label": -1},
))


def get_config():
  config = default_config()
  config.model.kind = NAME
  config.data.source = "synthetic"
  config.num_train_steps = 60
  config.log_every_steps = 20
  config.eval_every_steps = 30
  config.checkpoint_every_steps = 30
  config.per_device_batch_size = 4
  config.learning_rate = 1e-2
  config.warmup_steps = 5
  config.lr_schedule = "constant"
  config.label_smoothing = 0.0
  config.model.emb_dim = 16
  config.model.mlp_dim = 64
  config.model.dropout_rate = 0.0
  config.model.attention_dropout_rate = 0.0
  return config
