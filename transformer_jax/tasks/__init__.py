"""What each model kind brings to the training loop: its data, tokenizer and evaluation.

The kinds' records (`transformer_jax.kinds`) build their tasks; `base.py` holds
the typed interface (`Task`, and `Evaluator`, what a task may use of the run).
"""
