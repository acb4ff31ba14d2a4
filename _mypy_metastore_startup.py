"""Startup hook of mypy-metastore, imported by ``mypy_metastore.pth`` at interpreter start.

It must cost (next to) nothing in every Python process of the environment, so it only
registers an import hook: when a process first imports the ``mypy`` package (mypy, dmypy,
mypy's parallel workers, anything that runs mypy in-process), :func:`metastore.seams.hook.activate`
decides whether the store is wanted there (environment set by the ``mypy-metastore``
drop-in, or ``enabled = true`` in the project's configuration) and installs it.
``MYPY_METASTORE=0`` turns all of this off.
"""

import os
import sys


class _MypyBuildImportHook:
    """A meta-path finder that never finds anything; it only notices the ``mypy`` package.

    The package, not ``mypy.build``: compiled (mypyc) mypy initialises its own modules
    directly, without the import system, so only the first import of the package - by a
    console script, ``python -m mypy...`` or an in-process user - is sure to pass here.
    """

    @classmethod
    def find_spec(cls, name, path=None, target=None):  # type: ignore[no-untyped-def]
        if name != "mypy" and not name.startswith("mypy."):
            return None
        try:
            sys.meta_path.remove(cls)
        except ValueError:
            pass
        main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        if "metastore.seams.dropin" in sys.modules or getattr(main_spec, "name", "") == (
                "metastore.seams.dropin"):
            return None  # mypy-metastore installs the store itself (seams.hook: same test)
        try:
            from metastore.seams.hook import activate

            activate()
        except Exception as e:  # never break mypy because of the store
            sys.stderr.write(
                f"mypy-metastore: startup hook failed ({e!r}); mypy runs without the store\n")
        return None


if os.environ.get("MYPY_METASTORE") != "0" and _MypyBuildImportHook not in sys.meta_path:
    sys.meta_path.insert(0, _MypyBuildImportHook)
