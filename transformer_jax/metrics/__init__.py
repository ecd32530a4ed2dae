"""Losses, scores (BLEU, chrF, WER, F1) and their summaries."""
