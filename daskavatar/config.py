"""Defaults of daskavatar under the Dask config namespace ``daskavatar``.

The defaults live in ``daskavatar.yaml`` beside this module and are registered with
``dask.config.update_defaults`` on import, so the usual Dask mechanisms override them:
YAML files in ``~/.config/dask/``, ``DASK_DASKAVATAR__JOB__MAX_ITERATIONS=300`` style
environment variables, and ``dask.config.set``. Values are read when an object is built,
never at import time. The per-job settings and their validation are in
:mod:`daskavatar.jobs.spec`.
"""

import os

import dask.config
import yaml

_DEFAULTS_PATH = os.path.join(os.path.dirname(__file__), "daskavatar.yaml")

with open(_DEFAULTS_PATH) as f:
    _defaults = yaml.safe_load(f)

dask.config.update_defaults(_defaults)


def get(key: str, default=None):
    """Return ``daskavatar.<key>`` from the Dask config."""
    return dask.config.get(f"daskavatar.{key}", default=default)
