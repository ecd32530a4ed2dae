"""Data code that every kind shares: per-row, per-process grain streams (streams), hash
splits and the three-splits loader (splits), sentencepiece and Hugging Face tokenizers
(tokenizer, hf_tokenizer), the user's two-field files (files), gettext catalogs (gettext).
Each family's own corpus and pipeline live in kinds/<family>/."""
