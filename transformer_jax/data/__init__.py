"""Data: corpora and readers per kind (sources, lm_text, labelled_text, images), shared
splits (splits), sentencepiece (tokenizer), per-row streams (streams), grain (pipeline)."""
