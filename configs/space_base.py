"""A search space for configs/base.py (python -m transformer_jax.sweep --space=...): the
optimizer and regularisation fields its recipe was tuned on by hand (BUILD_NOTES,
"Hyper-parameter search", holds the study of 12 trials of 150 s that used it).

  python -m transformer_jax.sweep --config=configs/base.py --space=configs/space_base.py \
      --trials=12 --trial_budget_seconds=150 --study=runs/sweep_base \
      --objective=eval/bleu:max --pruner=none --enqueue_config
"""


def get_space():
  return {
      "learning_rate": ("log_uniform", 7e-4, 5e-3),
      "warmup_steps": ("int", 20, 300),
      "weight_decay": ("uniform", 0.0, 0.8),
      "model.dropout_rate": ("uniform", 0.0, 0.2),
      "label_smoothing": ("uniform", 0.0, 0.2),
  }
