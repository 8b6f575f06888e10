"""Game-ready asset data: the LOD chain with its atlas and baked textures, and the collision proxy.

Plain data between the asset stages and the exporter. Geometry stays in the walkthrough's world frame
(OpenCV axes: x right, y down, z forward; metres); the exporter alone converts to glTF's Y-up.
Texture coordinates follow glTF: (0, 0) is the top-left texel of the image, v grows downwards, so texel
row = v * height. Normal maps are tangent space with +Y (green) up, as glTF expects.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class LodLevel:
    """One level of detail, ready to export."""

    vertices: np.ndarray  # (V, 3) float32 metres, OpenCV axes
    faces: np.ndarray  # (F, 3) uint32, counter-clockwise seen from the front (trimesh's winding)
    normals: np.ndarray  # (V, 3) float32 unit
    uv: np.ndarray  # (V, 2) float32 in [0, 1]
    tangents: np.ndarray  # (V, 4) float32: unit xyz and handedness w = +-1, as glTF's TANGENT
    albedo: np.ndarray  # (S, S, 3) uint8, sRGB
    normal_map: np.ndarray  # (S, S, 3) uint8, tangent space
    screen_coverage: float  # show this level while the asset covers at least this fraction of the screen
    geometric_error: float  # metres: largest distance from the dense mesh's surface (see lod.py)


@dataclass
class Collider:
    """Collision proxy: a low-triangle mesh following floors and walls."""

    vertices: np.ndarray  # (V, 3) float32 metres, OpenCV axes
    faces: np.ndarray  # (F, 3) uint32
    notes: dict[str, Any] = field(default_factory=dict)  # how it was made, for the manifest


@dataclass
class Spawn:
    """Where a player starts: the first camera, and the floor under it."""

    c2w: np.ndarray  # (4, 4) camera-to-world, OpenCV axes, metres
    ground: np.ndarray | None  # (3,) the floor point under the camera, or None: the scene has no floor
    yfov_deg: float | None = None  # the camera's vertical field of view
    patched_m2: float = 0.0  # floor area the asset stage added under the spawn (see spawn.py)


def _first_camera() -> Spawn:
    return Spawn(np.eye(4), None)


@dataclass
class LevelAsset:
    name: str
    lods: list[LodLevel]
    collider: Collider
    extras: dict[str, Any] = field(default_factory=dict)  # generator, licence, preset, job key, tool version
    spawn: Spawn = field(default_factory=_first_camera)
