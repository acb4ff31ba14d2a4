"""mypy-metastore: a content-addressed SQLite store for mypy's incremental cache.

Importing this package is cheap (no third-party imports): the startup hook installed by
``mypy_metastore.pth`` may import parts of it in every Python process that has the
package installed, but only when activation is requested.
"""

__version__ = "0.1.0"
