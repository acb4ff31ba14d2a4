"""Test harness for the end-to-end tests of mypy-metastore.

- :mod:`tests.helpers.gen`: deterministic generator of multi-package projects (pure functions
  returning ``{relative path: text}`` mappings, plus a writer).
- :mod:`tests.helpers.run`: running stock mypy, the oracle and the drop-in in subprocesses with an
  isolated environment; parsers for ``mypy -v`` output and the drop-in's stats line.
- :mod:`tests.helpers.venvs`: virtualenvs (the installed product, an old mypy, two venvs holding
  the same third-party package).
"""
