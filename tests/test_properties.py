"""Property tests: arbitrary bytes in data files and arbitrary config overrides never end in
an unhandled exception, only in data read or one named error."""

import os

from hypothesis import HealthCheck, given, settings, strategies as st

from transformer_jax import config as config_lib, kinds
from transformer_jax.data.splits import CorpusError
from transformer_jax.errors import ConfigError
from transformer_jax.kinds.classification import labelled_text
from transformer_jax.kinds.translation import corpus as sources
from transformer_jax.tools import cli

from conftest import tiny_config

FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".tsv", ".jsonl"]),
       reader=st.sampled_from(["parallel", "labelled"]))
def test_data_files_of_arbitrary_bytes_are_read_or_named(tmp_path, data, suffix, reader):
  path = tmp_path / f"data{suffix}"
  path.write_bytes(data)
  read = sources.read_parallel_file if reader == "parallel" else labelled_text.read_labelled_file
  try:
    rows = read(str(path))
  except CorpusError as e:
    assert str(path) in str(e)
    return
  for first, second in rows:
    assert isinstance(first, str) and isinstance(second, str) and first and second


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(REPO, "configs", "base.py")
FIELDS = ("num_train_steps", "learning_rate", "model.dtype", "pruning.sparsity",
          "decoding.method", "data.vocab_size", "quantization.bits", "mesh.data")


@FAST
@given(name=st.text(max_size=30), value=st.text(max_size=30), field=st.sampled_from(FIELDS))
def test_config_overrides_of_arbitrary_text_are_named_or_checked(name, value, field):
  # `--config.NAME=...`: a name that is no field is named before anything runs.
  message = cli.unknown_override(["x", f"--config={BASE}", f"--config.{name}=1"])
  fields = cli._fields(config_lib.default_config())  # pylint: disable=protected-access
  assert (message is None) == (name.split("=", 1)[0] in fields)
  # `--config.FIELD=VALUE`: config_flags parses VALUE to the field's type or refuses it;
  # a parsed value is valid, or validation names the field.
  config = tiny_config()
  *parents, leaf = field.split(".")
  node = config
  for p in parents:
    node = node[p]
  try:
    node[leaf] = type(node[leaf])(value)
  except (TypeError, ValueError):
    return
  try:
    kinds.validate(config)
  except ConfigError as e:
    assert str(e).startswith("config.")


def test_unknown_override_names_only_missing_fields():
  argv = ["x", f"--config={BASE}", "--config.model.emb_dim=4", "--config.pruning.sparsity=0.5"]
  assert cli.unknown_override(argv) is None
  message = cli.unknown_override(argv + ["--config.model.emb_dims=8"])
  assert message.startswith("--config.model.emb_dims: no such config field")
  assert "model.emb_dim" in message
