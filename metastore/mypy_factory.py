"""The name a patched mypy's ``cache_store`` setting gives (``metastore.mypy_factory:create``,
see README): a stable public alias of :func:`metastore.seams.cache_store.create`."""

from metastore.seams.cache_store import create

__all__ = ["create"]
