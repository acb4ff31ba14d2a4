"""The ``metastore`` admin command: stats, verify, gc, merge, export, config, bench.

- :mod:`metastore.cli.admin`: the command line;
- :mod:`metastore.cli.maintenance`: store maintenance (verify, gc, merge, export);
- :mod:`metastore.cli.bench`: ``metastore bench`` (store vs stock mypy on a project).
"""
