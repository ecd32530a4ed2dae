"""Run configs: every field's default, a saved run's config, the generic field checks.

Imports nothing else of the package but `errors`: every config file imports it.
The whole check of a run's config, kind and mesh included, is
`transformer_jax.kinds.validate`.
"""

from transformer_jax.config.checks import DTYPES, LR_SCHEDULES
from transformer_jax.config.defaults import default_config
from transformer_jax.config.saved import from_json
from transformer_jax.errors import ConfigError

__all__ = ["ConfigError", "DTYPES", "LR_SCHEDULES", "default_config", "from_json"]
