"""A second search space for configs/base.py, narrowed around the shipped recipe after the
first study (configs/space_base.py; BUILD_NOTES, "Hyper-parameter search"): dropout stays
at 0 (any dropout cost BLEU at short budgets), the optimizer's ranges close in on the
defaults, and the batch size joins (at a fixed time budget, smaller batches give more
steps). BUILD_NOTES holds its study of 10 trials of 150 s and the best trial run at the
full 720 s against the defaults (the defaults won).

  python -m transformer_jax.sweep --config=configs/base.py --space=configs/space_base_near.py \
      --trials=10 --trial_budget_seconds=150 --study=runs/sweep_near \
      --objective=eval/bleu:max --pruner=none --enqueue_config
"""


def get_space():
  return {
      "learning_rate": ("log_uniform", 1.2e-3, 3.2e-3),
      "warmup_steps": ("int", 40, 200),
      "weight_decay": ("uniform", 0.2, 0.8),
      "label_smoothing": ("uniform", 0.0, 0.15),
      "per_device_batch_size": ("categorical", [8, 12, 16, 24]),
  }
