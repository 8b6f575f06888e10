"""Gaussian splats next to the GLB: the walkthrough's splats as a 3DGS PLY in the GLB's frame (Y up, metres)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..splats import GaussianSplats, Similarity, write_ply
from .gltf import OPENCV_TO_GLTF


def export_splats(splats: GaussianSplats, path: str | Path) -> None:
    """Write splats in the walkthrough's frame (OpenCV axes, metres) as a PLY in glTF's frame (Y up)."""
    write_ply(path, splats.transformed(Similarity(1.0, np.diag(OPENCV_TO_GLTF.astype(np.float64)), np.zeros(3))))
