"""The mypy layer: mypy's metadata-store protocol on content keys (knows nothing of SQLite).

- :mod:`metastore.mypy.protocol`: :class:`~metastore.mypy.protocol.MypyStore`, what mypy
  talks to, made of the parts below (each a class of its own module, over
  :mod:`metastore.mypy.state`): :mod:`~metastore.mypy.workers` (parallel builds),
  :mod:`~metastore.mypy.reading` (entries as served), :mod:`~metastore.mypy.choosing`
  (candidates and consistent choice), :mod:`~metastore.mypy.snapshots` (the run snapshot in
  use), :mod:`~metastore.mypy.recording` (the run snapshot written),
  :mod:`~metastore.mypy.publishing` (units from mypy's writes);
- :mod:`metastore.mypy.selection`: the constraint solver choosing units as one set (pure);
- :mod:`metastore.mypy.run_snapshot`, :mod:`~metastore.mypy.snapshot_delta`: the run
  snapshot's encoding, and deltas on it (pure);
- :mod:`metastore.mypy.units`, :mod:`~metastore.mypy.stats`: values and counters;
- :mod:`metastore.mypy.cache_codec`, :mod:`~metastore.mypy.view`, :mod:`~metastore.mypy.paths`,
  :mod:`~metastore.mypy.source_files`, :mod:`~metastore.mypy.compat`: mypy's cache formats,
  its build state, portable paths, source content keys, supported versions.

It reaches the store only through the protocol types of :mod:`metastore.mypy.state` (given
an object by the seams) and :mod:`metastore.store.api`. Nothing is imported here.
"""
