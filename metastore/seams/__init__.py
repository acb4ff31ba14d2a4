"""The seams: how mypy reaches the mypy layer, kept thin.

- :mod:`metastore.seams.sql`: answers compiled mypy's SQLite calls (``sqlite3.connect``);
- :mod:`metastore.seams.dropin`: the ``mypy-metastore`` command (mypy's argv);
- :mod:`metastore.seams.hook`: activation at interpreter start (the ``.pth`` file) for
  parallel workers and plain ``mypy``;
- :mod:`metastore.seams.cache_store`: the factory a patched mypy's ``--cache-store`` calls;
- :mod:`metastore.seams.session`: the processes of one build and their scratch pad.

They wire the store layer (:mod:`metastore.store`) to the mypy layer (:mod:`metastore.mypy`)
and read the configuration (:mod:`metastore.config`). Nothing is imported here.
"""
