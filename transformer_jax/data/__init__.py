"""Data: corpora and splits (sources), sentencepiece (tokenizer), grain (pipeline)."""
