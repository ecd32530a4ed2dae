"""python -m transformer_jax.sweep: hyper-parameter search over train.py runs (Optuna).

__main__.py (flags, the worker loop, the summary), space.py (the search space file, checked
against the config), trial.py (one trial: train.py, its evaluations reported, pruned, its
failure's reason), study.py (the study database, workers' turns, interrupted trials run
again), report.py (the table, the best command line, importances, plots)."""
