"""The store layer: content-addressed, layered SQLite storage that knows nothing of mypy.

- :mod:`metastore.store.api`: its vocabulary without SQLite (errors, digests, entries) -
  what the layers above import;
- :mod:`metastore.store.sqlite`: the file format and the statement/transaction helpers;
- :mod:`metastore.store.layer`: one store file (top or base);
- :mod:`metastore.store.local`: :class:`~metastore.store.local.Store`, a writable top over
  read-only bases - the local tier;
- :mod:`metastore.store.scratch`: a build's scratch pad shared by its processes.

Nothing is imported here, so that importing :mod:`metastore.store.api` does not load apsw.
"""
