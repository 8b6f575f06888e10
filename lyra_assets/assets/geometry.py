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


FACE_CHUNK = 1 << 18  # faces per step of the per-face measures: their temporaries stay about 20 MB


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(F, 3) float64 cross products of each triangle's edges: normal direction, length twice the area.
    Computed in steps, so a dense mesh's (F, 3, 3) corner array never exists at once."""
    out = np.empty((len(faces), 3))
    for start in range(0, len(faces), FACE_CHUNK):
        f = faces[start:start + FACE_CHUNK]
        a = vertices[f[:, 0]]
        out[start:start + len(f)] = np.cross(vertices[f[:, 1]] - a, vertices[f[:, 2]] - a)
    return out


def triangle_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(F,) float64 triangle areas."""
    return 0.5 * np.linalg.norm(face_normals(vertices, faces), axis=1)
