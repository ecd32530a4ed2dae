"""Decoding: greedy / sampling search, beam search, CTC prefix search, word lists, placeholders."""
