"""Effective configuration of mypy-metastore: defaults < file < environment < flags.

- :mod:`metastore.config.keys`: the settings, their environment variables, flags and
  defaults (the table is there);
- :mod:`metastore.config.sources`: mypy's argv and the configuration file;
- :mod:`metastore.config.settings`: parsing, merging, the environment of child processes,
  ``metastore config``'s description.

Imported by the startup hook only when activation is requested; imports stay small and lazy.
"""

from metastore.config.keys import (
    CONFIG_KEYS, DEFAULT_MAX_SIZE, ENV_BASES, ENV_COPY_HITS, ENV_ENABLED, ENV_MAX_SIZE,
    ENV_REMOTE, ENV_REMOTE_KEY, ENV_REMOTE_READ_ONLY, ENV_REMOTE_TIMEOUT, ENV_STATS, ENV_STORE,
    ENV_VERIFY_BASES, FLAGS, Config, ConfigError, Setting, default_store_path, mask_url)
from metastore.config.settings import (
    describe, export_to_environ, load_config, parse_size, split_base)
from metastore.config.sources import expand_argfiles, find_config_file, split_argv

__all__ = [
    "CONFIG_KEYS",
    "DEFAULT_MAX_SIZE",
    "ENV_BASES",
    "ENV_COPY_HITS",
    "ENV_VERIFY_BASES",
    "ENV_ENABLED",
    "ENV_MAX_SIZE",
    "ENV_REMOTE",
    "ENV_REMOTE_KEY",
    "ENV_REMOTE_READ_ONLY",
    "ENV_REMOTE_TIMEOUT",
    "ENV_STATS",
    "ENV_STORE",
    "FLAGS",
    "Config",
    "ConfigError",
    "Setting",
    "default_store_path",
    "describe",
    "expand_argfiles",
    "export_to_environ",
    "find_config_file",
    "load_config",
    "mask_url",
    "parse_size",
    "split_argv",
    "split_base",
]
