"""A Blender camera animation as a Lyra 2.0 trajectory.npz, in the pipeline's camera conventions.

Plain Python and numpy (which Blender bundles), no bpy: the scene is sampled by the caller.
The pipeline's conventions (see lyra_assets/trajectory.py): OpenCV camera axes (x right, y down, z forward),
the world is the first camera, metres, intrinsics in pixels with pixel centres at (col + 0.5, row + 0.5),
so a centred principal point is (W/2, H/2). The file holds w2c (N,4,4) float32, intrinsics (N,3,3) float32,
image_height and image_width as int64 scalars.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

# Blender cameras look down their local -Z with +Y up; OpenCV cameras look down +Z with +Y down. The same
# camera in OpenCV axes is the Blender camera turned half a turn about its x axis.
BLENDER_TO_OPENCV_CAMERA = np.diag([1.0, -1.0, -1.0, 1.0])
# An imported level's world (OpenCV axes, y down, z forward) in Blender's (Z up): glTF's Y-up axes, which the
# exporter converts to, are turned Z-up by Blender's glTF importer, so x stays, z becomes Y and -y becomes Z.
OPENCV_WORLD_TO_BLENDER = np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1.0]])


def focal_length_px(lens_mm: float, sensor_width_mm: float, sensor_height_mm: float, sensor_fit: str,
                    width: int, height: int) -> float:
    """Focal length in pixels of a Blender perspective camera rendering width x height square pixels.

    Blender fits the sensor to one side of the image: AUTO fits sensor_width to the longer side,
    HORIZONTAL fits sensor_width to the width, VERTICAL fits sensor_height to the height."""
    if sensor_fit == "AUTO":
        return lens_mm / sensor_width_mm * max(width, height)
    if sensor_fit == "HORIZONTAL":
        return lens_mm / sensor_width_mm * width
    if sensor_fit == "VERTICAL":
        return lens_mm / sensor_height_mm * height
    raise ValueError(f"unknown sensor fit {sensor_fit!r}")


def intrinsics(focal_px: float, width: int, height: int) -> np.ndarray:
    """Pinhole K with square pixels and the principal point at the image centre."""
    return np.array([[focal_px, 0.0, width / 2.0], [0.0, focal_px, height / 2.0], [0.0, 0.0, 1.0]])


def opencv_cameras(blender_c2w: np.ndarray) -> np.ndarray:
    """(N,4,4) camera-to-world poses in OpenCV camera axes, in Blender's world.

    blender_c2w holds the cameras' world matrices. Object scale is divided out (a scaled camera still has a
    rigid pose). Blender units are taken as metres, as Blender's glTF importer takes the assets' metres."""
    c2w = np.array(blender_c2w, dtype=np.float64)
    if c2w.ndim != 3 or c2w.shape[1:] != (4, 4) or len(c2w) < 1:
        raise ValueError(f"camera matrices must have shape (N, 4, 4), got {c2w.shape}")
    c2w[:, :3, :3] /= np.linalg.norm(c2w[:, :3, :3], axis=1, keepdims=True)
    return c2w @ BLENDER_TO_OPENCV_CAMERA


def world_to_first_camera(blender_c2w: np.ndarray) -> np.ndarray:
    """(N,4,4) world-to-camera poses in OpenCV axes, with the first camera as the world."""
    opencv_c2w = opencv_cameras(blender_c2w)
    # camera i relative to camera 0: inverse(c2w_i) @ c2w_0 maps first-camera coordinates into camera i.
    return np.linalg.inv(opencv_c2w) @ opencv_c2w[0]


def world_to_level(blender_c2w: np.ndarray, level_matrix: np.ndarray) -> np.ndarray:
    """(N,4,4) world-to-camera poses in the frame of an imported level (its walkthrough's world: the first
    camera, OpenCV axes), for cameras placed around the level whose root has world matrix level_matrix."""
    level = np.asarray(level_matrix, dtype=np.float64) @ OPENCV_WORLD_TO_BLENDER
    return np.linalg.inv(np.linalg.inv(level) @ opencv_cameras(blender_c2w))


def lyra_trajectory(blender_c2w: np.ndarray, focal_px: np.ndarray, width: int, height: int,
                    level_matrix: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The arrays of a Lyra trajectory.npz for N camera world matrices and their N focal lengths: relative to
    the first camera, or in a level's world when its root's matrix is given."""
    w2c = world_to_first_camera(blender_c2w) if level_matrix is None else world_to_level(blender_c2w, level_matrix)
    focal_px = np.broadcast_to(np.asarray(focal_px, dtype=np.float64), (len(w2c),))
    K = np.stack([intrinsics(f, width, height) for f in focal_px])
    return {"w2c": w2c.astype(np.float32), "intrinsics": K.astype(np.float32),
            "image_height": np.int64(height), "image_width": np.int64(width)}


def write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Write the arrays to path, under a temporary name first, so a reader never sees half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(suffix=".npz", dir=folder)
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **arrays)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
