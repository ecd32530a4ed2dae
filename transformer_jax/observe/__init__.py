"""Seeing a run: metric writers, timing, profiles, the model summary, FLOPs."""
