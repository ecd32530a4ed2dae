"""python -m transformer_jax.serve: a trained run behind HTTP, with dynamic batching.

__main__.py (flags, start-up, shutdown), engines.py (the run's batched programs per job),
programs.py (buckets; programs compiled at start-up), batcher.py (requests -> batches),
service.py (what the routes share; errors as JSON), app.py (routes), openai_api.py
(OpenAI's endpoints and shapes), requests.py (request fields checked), metrics.py
(Prometheus)."""
