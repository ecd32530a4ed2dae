"""Orbax checkpoints: the manager, the state layout, params-only reads."""
