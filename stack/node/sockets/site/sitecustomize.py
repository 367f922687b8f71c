"""Put a Python program's TCP sockets on a pystack node's stack (`lab exec` puts this folder first on the
PYTHONPATH and names the node's socket service in NSLAB_SOCKETS).

The shim is loaded by path, as the private package `_nslab_sockets`, so the program's own modules (even one
named `stack`) and its imports are untouched. Without NSLAB_SOCKETS nothing changes.
"""

import importlib.util
import os
import sys


def _install() -> None:
    path = os.environ.get("NSLAB_SOCKETS")
    if not path:
        return
    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(
        "_nslab_sockets", os.path.join(package_dir, "__init__.py"), submodule_search_locations=[package_dir])
    if spec is None or spec.loader is None:
        return
    package = importlib.util.module_from_spec(spec)
    sys.modules["_nslab_sockets"] = package
    spec.loader.exec_module(package)
    from _nslab_sockets import shim

    shim.install(path)


_install()
