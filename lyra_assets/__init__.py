"""lyra-assets: one concept image in, a game-ready glTF level asset out.

    from lyra_assets import build, CameraPath, Walkthrough
    result = build("concept.png", preset="walk_forward", out_dir="out/", progress=print)
"""
import os
import sys
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

import platformdirs

# numba's compiled kernels go to the user's cache folder (works for a read-only install, survives
# reinstalls of the same version); set before anything imports numba, and only if the user set nothing.
os.environ.setdefault("NUMBA_CACHE_DIR", str(platformdirs.user_cache_path("lyra-assets") / "numba"))
if "numba" in sys.modules:  # imported before us: it read its settings already, so tell it directly
    from numba.core import config as _numba_config

    _numba_config.CACHE_DIR = _numba_config.CACHE_DIR or os.environ["NUMBA_CACHE_DIR"]
# numba runs its parallel kernels on libgomp, whose threads by default spin for a while after each kernel
# waiting for the next. The stages call kernels thousands of times, and on 2 cores that spinning took CPU from
# the thread working beside them: passive waiting made a 121-frame build 0.5-0.9 s faster (interleaved runs).
# libgomp reads this when it starts (numba's first parallel kernel); a user's own setting is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    __version__ = version("lyra-assets")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

# The public API, imported on first use so `import lyra_assets` stays light (no numba, no heavy stages).
_EXPORTS = {
    "build": "pipeline", "generate": "pipeline", "mesh": "pipeline", "extend": "pipeline",
    "CameraPath": "trajectory", "Walkthrough": "walkthrough", "LyraAssetsError": "errors",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'lyra_assets' has no attribute {name!r}")
