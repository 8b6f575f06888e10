"""Small vector and mesh helpers the asset stages and the exporter share (numpy only: cheap to import)."""
from __future__ import annotations

import numpy as np


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (in the input's float type); zero rows stay zero."""
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def perpendicular(normals: np.ndarray) -> np.ndarray:
    """(N, 3) a unit vector perpendicular to each unit normal: any will do where no direction is given."""
    helper = np.where(np.abs(normals[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    return unit(np.cross(normals, helper))


def repeats_a_vertex(faces: np.ndarray) -> np.ndarray:
    """(F,) bool: triangles that use one vertex twice (they have no area and draw nothing)."""
    return (faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2]) | (faces[:, 0] == faces[:, 2])
