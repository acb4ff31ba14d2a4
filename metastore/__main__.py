"""``python -m metastore``: the admin CLI (same as the ``metastore`` command)."""

from metastore.cli.admin import main

if __name__ == "__main__":
    main()
