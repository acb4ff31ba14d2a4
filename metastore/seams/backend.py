"""Opening the store a build uses: the local store, and the remote tier below it when
``remote`` is configured (see :mod:`metastore.store.tiered`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from metastore.config import Config, split_base

if TYPE_CHECKING:
    from metastore.store.local import Store
    from metastore.store.tiered import TieredStore


def open_backend(config: Config, report: Callable[[str], None], *,
                 local_options: bool = True) -> Store | TieredStore:
    """The configured store; raises what :class:`Store` raises (StoreError). A remote that
    cannot even be set up (unknown scheme, missing ``redis`` package) is reported in one
    line and left out: the local store alone is returned."""
    from metastore.store.api import Base
    from metastore.store.local import Store

    bases = [Base(*split_base(spec)) for spec in config.bases.value]
    if local_options:
        local = Store(config.store.value, bases, copy_hits=config.copy_hits.value,
                      max_size=config.max_size.value, verify_bases=config.verify_bases.value,
                      on_damage=report)
    else:
        local = Store(config.store.value, bases)
    url = config.remote.value
    if not url:
        return local
    from metastore.mypy.slot_kinds import LOCAL_KINDS
    from metastore.store.tier import RemoteError, mask_url, open_tier
    from metastore.store.tiered import TieredStore

    try:
        tier = open_tier(url, timeout=config.remote_timeout.value)
    except RemoteError as e:
        report(f"remote {mask_url(url)}: {e}; running without the remote")
        return local
    return TieredStore(local, tier, url=url, read_only=config.remote_read_only.value,
                       secret=config.remote_key.value.encode() or None, report=report,
                       local_kinds=LOCAL_KINDS)


def remote_line(backend: object) -> str:
    """The remote's line printed after the stats line (``"\nmypy-metastore: remote_hits=...
    remote=URL"``), or "" without a remote."""
    from metastore.store.tiered import TieredStore

    if isinstance(backend, TieredStore):
        return f"\nmypy-metastore: {backend.remote_stats.line()} remote={backend.url}"
    return ""
