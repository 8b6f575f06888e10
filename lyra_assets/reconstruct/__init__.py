"""Walkthrough -> dense coloured mesh (TSDF fusion + marching cubes)."""
from .fusion import FusedScene, fuse

__all__ = ["FusedScene", "fuse"]
