"""What a run looks like: plots and report.md from metrics.jsonl (`runs`, `plots`,
`markdown`) and attention maps from a checkpoint (`attention`). The command line is
`python -m transformer_jax.report` (`__main__.py`)."""
