"""The drop-in's own options as help text: ``mypy-metastore --metastore-help``, and the
section ``mypy-metastore --help`` prints after mypy's help.

Every setting is listed with its ``--metastore-*`` flag (where it has one), its environment
variable and its key in the config file, so that one screen answers "how do I set X".
"""

from __future__ import annotations

import textwrap

from metastore.config.keys import (
    CONFIG_KEYS, ENV_BASES, ENV_COPY_HITS, ENV_ENABLED, ENV_MAX_SIZE, ENV_REMOTE, ENV_REMOTE_KEY,
    ENV_REMOTE_READ_ONLY, ENV_REMOTE_TIMEOUT, ENV_STATS, ENV_STORE, ENV_VERIFY_BASES, FLAGS)

__all__ = ["HELP_FLAG", "settings_help"]

#: Prints only this section and exits 0 (not a setting: handled by the drop-in itself).
HELP_FLAG = "--metastore-help"

#: Per setting: (its environment variable with the values it takes, what it does).
_SETTINGS: dict[str, tuple[str, str]] = {
    "enabled": (f"{ENV_ENABLED}=0|1",
                "run plain mypy, without the store (plain `mypy` and dmypy use the store "
                "only with enabled = true)"),
    "store": (f"{ENV_STORE}=PATH",
              "the store, the writable top layer (created on first use); default "
              "~/.cache/mypy-metastore/store.db ($XDG_CACHE_HOME if set)"),
    "bases": (f"{ENV_BASES}=PATH[:PATH...]",
              "a read-only layer looked up after the store (repeat the flag for several, "
              "in order; PATH?immutable=1 for a file that never changes while in use)"),
    "stats": (f"{ENV_STATS}=0|1",
              "print one line of store statistics on stderr at the end of the run"),
    "remote": (f"{ENV_REMOTE}=URL",
               "a shared tier below the store: redis://, rediss://, unix:// (pip install "
               "'mypy-metastore[remote]') or http[s]://"),
    "max_size": (f"{ENV_MAX_SIZE}=SIZE",
                 "cap of the store (500M, 5G, ...; 0: no cap; default 5G); least recently "
                 "used entries are evicted"),
    "copy_hits": (f"{ENV_COPY_HITS}=0|1",
                  "copy what a run used from a base into the store"),
    "verify_bases": (f"{ENV_VERIFY_BASES}=0|1",
                     "check every blob read from a base against its digest (default on)"),
    "remote_read_only": (f"{ENV_REMOTE_READ_ONLY}=0|1",
                         "read from the remote, never write to it"),
    "remote_key": (f"{ENV_REMOTE_KEY}=SECRET",
                   "tag what is written to the remote (HMAC-SHA256), reject untagged reads"),
    "remote_timeout": (f"{ENV_REMOTE_TIMEOUT}=SECONDS",
                       "longest wait for one remote batch (default 2)"),
}

_WIDTH = 78
_INDENT = 26


def _entry(head: str, lines: list[str]) -> list[str]:
    """``head`` in the left column (alone on its line when too wide), each of ``lines``
    wrapped in the right one."""
    pad = " " * _INDENT
    fits = len(head) < _INDENT - 3
    out = [] if fits else [f"  {head}"]
    first = f"  {head:<{_INDENT - 3}} " if fits else pad
    for i, line in enumerate(lines):
        out += textwrap.wrap(line, _WIDTH, initial_indent=first if i == 0 else pad,
                             subsequent_indent=pad)
    return out


def settings_help() -> str:
    """The help section: every ``--metastore-*`` flag, then the settings that have none,
    each with its environment variable and config key. Ends with a newline."""
    flag_of = {key: (flag, takes) for flag, (key, takes) in FLAGS.items()}
    out = ["mypy-metastore options (taken out of argv before mypy sees it; each setting can",
           "also be set in the environment, or as a key of [tool.metastore] in pyproject.toml",
           "or [metastore] in mypy.ini / setup.cfg; flags win over the environment, the",
           "environment over the file; `metastore config` shows the effective values):", ""]
    keyed = sorted(CONFIG_KEYS, key=lambda k: (k not in flag_of, CONFIG_KEYS.index(k)))
    for key in keyed:
        env, what = _SETTINGS[key]
        if key in flag_of:
            flag, takes = flag_of[key]
            head = f"{flag} {'URL' if key == 'remote' else 'PATH'}" if takes else flag
        else:
            head = f"(no flag) {key}"
        out += _entry(head, [what, f"env {env}; config key {key}"])
    out += _entry(HELP_FLAG, ["show only this section and exit"])
    return "\n".join(out) + "\n"
