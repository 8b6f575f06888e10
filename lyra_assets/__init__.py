"""lyra-assets: one concept image in, a game-ready glTF level asset out."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lyra-assets")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
