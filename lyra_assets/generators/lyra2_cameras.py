"""Lyra 2.0's camera files: the cameras its reconstruction estimated (cameras.npz), read in our conventions."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import LyraAssetsError
from ..files import read_npz
from ..splats import fit_cameras


@dataclass(frozen=True)
class ReconCameras:
    frames: np.ndarray  # (M,) int: which video frames these are
    c2w: np.ndarray  # (M, 4, 4) float64 camera-to-world in the reconstruction's frame
    K: np.ndarray | None  # (M, 3, 3) in video pixels, when the file has them
    source: str  # the key the poses came from, and how it was read


# Lyra 2.0's vipe_da3_gs_recon writes cameras.npz with, per video frame, `w2c_render` (N,4,4: the poses its
# own splat render uses, consistent with the PLY), and with ViPE also `w2c_vipe` and `intrinsics_vipe`
# (N,3,3); without ViPE `intrinsics_render`. Sparser keys (`w2c_da3`, `w2c_da3_pred`) come with `indices_da3`.
# Other writers name poses `c2w`, `w2c`, `poses` or `extrinsics`; a key naming neither direction is read both
# ways and the one that fits the requested path better wins (the wrong one turns every relative rotation
# around, which no single similarity can undo).
_POSE_KEYS = ("w2c_render", "w2c_vipe", "c2w", "w2c", "cam_c2w", "camera_c2w", "poses", "extrinsics",
              "w2c_da3", "w2c_da3_pred")
_INTRINSICS_KEYS = ("intrinsics_vipe", "intrinsics_render", "intrinsics", "K", "Ks")


def read_lyra_cameras(path: str | Path, n_frames: int, requested_c2w: np.ndarray | None = None) -> ReconCameras:
    """The reconstruction's estimated cameras, for frames of an n_frames video (see _POSE_KEYS).

    requested_c2w: (n_frames, 4, 4) the path the video was made along; needed only for pose keys that do
    not say their direction.
    """
    path = Path(path)
    arrays = read_npz(path, "cameras.npz")
    key = next((k for k in _POSE_KEYS if k in arrays and _is_pose_stack(arrays[k])), None)
    if key is None:
        key = next((k for k in sorted(arrays) if ("c2w" in k or "w2c" in k) and _is_pose_stack(arrays[k])), None)
    if key is None:
        raise LyraAssetsError(f"{path}: no camera poses found (looked for {', '.join(_POSE_KEYS)}: (N,4,4) or "
                              f"(N,3,4)); it holds {', '.join(sorted(arrays)) or 'nothing'}")
    poses = _pad_poses(arrays[key].astype(np.float64))
    frames = _frame_indices(arrays, key, len(poses), n_frames, path)
    if "c2w" in key:
        c2w, how = poses, "camera-to-world"
    elif "w2c" in key:
        c2w, how = np.linalg.inv(poses), "world-to-camera"
    else:
        c2w, how = _guess_direction(poses, frames, requested_c2w, path, key)
    found = (_intrinsics(arrays[k], len(poses)) for k in _INTRINSICS_KEYS if k in arrays)
    K = next((k for k in found if k is not None), None)
    return ReconCameras(frames, c2w, K, f"{key} ({how})")


def _is_pose_stack(value: np.ndarray) -> bool:
    return value.ndim == 3 and value.shape[1:] in ((4, 4), (3, 4)) and len(value) > 0


def _pad_poses(poses: np.ndarray) -> np.ndarray:
    if poses.shape[1:] == (4, 4):
        return poses
    out = np.tile(np.eye(4), (len(poses), 1, 1))
    out[:, :3, :4] = poses
    return out


def _frame_indices(arrays: dict[str, np.ndarray], key: str, count: int, n_frames: int, path: Path) -> np.ndarray:
    """Which video frames the `count` poses under `key` belong to."""
    suffix = key.split("_", 1)[1] if "_" in key else ""
    for name in (f"indices_{suffix}", f"indices_{suffix.removesuffix('_pred')}", "frame_ids", "indices"):
        if name in arrays and arrays[name].shape == (count,):
            frames = arrays[name].astype(np.int64)
            break
    else:
        if count != n_frames:
            raise LyraAssetsError(f"{path}: {key} has {count} poses for a {n_frames}-frame video and no "
                                  "frame indices to match them")
        frames = np.arange(count)
    if frames.min() < 0 or frames.max() >= n_frames:
        raise LyraAssetsError(f"{path}: frame indices of {key} run outside the {n_frames}-frame video")
    return frames


def _guess_direction(poses: np.ndarray, frames: np.ndarray, requested_c2w: np.ndarray | None, path: Path,
                     key: str) -> tuple[np.ndarray, str]:
    if requested_c2w is None:
        raise LyraAssetsError(f"{path}: {key!r} does not say whether its poses are camera-to-world or "
                              "world-to-camera, and there is no requested path to tell by")

    def misfit(c2w: np.ndarray) -> float:
        try:
            return fit_cameras(c2w, requested_c2w[frames]).max_rotation_error_deg
        except LyraAssetsError:  # a negative scale: this reading walks the path backwards
            return math.inf

    inverse = np.linalg.inv(poses)
    if misfit(inverse) <= misfit(poses):
        return inverse, "world-to-camera, judged by the fit to the path"
    return poses, "camera-to-world, judged by the fit to the path"


def _intrinsics(value: np.ndarray, count: int) -> np.ndarray | None:
    if value.shape == (3, 3):
        return np.broadcast_to(value.astype(np.float64), (count, 3, 3)).copy()
    if value.shape == (count, 3, 3):
        return value.astype(np.float64)
    return None
