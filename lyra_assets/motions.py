"""Preset motions as camera paths, kept clear of the surfaces the generator has seen.

Every motion starts at the concept image's viewpoint (pose 0 = identity: world = first camera). A preset's
distances are metres at its reference depth and scale with the depth the generator reports. The free-space
check then shrinks the whole motion towards the start until every camera is at least the margin away from
every surface, and says so in the returned notes (they go into the walkthrough's manifest).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .errors import LyraAssetsError
from .presets import Preset
from .trajectory import CameraPath, ease, intrinsics_from_fov, look_at, yaw_pose

Clearance = Callable[[np.ndarray], np.ndarray]  # (M, 3) points -> (M,) metres to the nearest seen surface


@dataclass(frozen=True)
class FreeSpace:
    """What a generator knows of the scene before walking it."""

    depth: float  # metres from the first camera to the far surface along its view axis
    centre: np.ndarray  # (3,) the point an orbit circles
    clearance: Clearance | None  # None when the generator cannot know before generating (no check made)


def camera_path(preset: Preset, space: FreeSpace,
                start: np.ndarray | None = None) -> tuple[CameraPath, dict[str, Any]]:
    """The preset's motion at the scene's scale, shortened to keep the margin. Returns (path, notes).
    `start` (camera-to-world) is where the motion begins [the first camera]: an extension starts elsewhere."""
    scale = space.depth / preset.scene.reference_depth_m
    c2w = _motion_poses(preset, space, scale)
    if start is not None:
        c2w = start @ c2w
    K = intrinsics_from_fov(preset.camera.hfov_deg, preset.camera.width, preset.camera.height)
    path = CameraPath(c2w, K, preset.camera.width, preset.camera.height, preset.path.fps)
    if preset.path.lyra_frame_count:
        path = path.with_lyra_frame_count()
    return keep_clear(path, space, preset.scene.margin_m, {"motion": preset.path.motion, "depth_scale": scale})


def keep_clear(path: CameraPath, space: FreeSpace, margin: float,
               notes: dict[str, Any] | None = None) -> tuple[CameraPath, dict[str, Any]]:
    """Shrink the path towards its first camera until every camera keeps `margin` from seen surfaces."""
    notes = dict(notes or {})
    if space.clearance is None:
        notes["free_space_check"] = "not possible: the generator does not know the scene before generating"
        return path, notes
    start = float(space.clearance(path.centres[:1])[0])
    if start < margin:
        raise LyraAssetsError(
            f"the first camera is only {start:.2f} m from a surface, closer than the margin of {margin} m; "
            "lower scene.margin_m or check the layout hints (eye height, back wall) in the sidecar"
        )
    lo, hi = 0.0, 1.0
    if _min_clearance(path, space.clearance) < margin:
        for _ in range(30):  # bisection on the motion's scale; 30 halvings is far below a millimetre
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if _min_clearance(path.scaled(mid), space.clearance) >= margin else (lo, mid)
        notes["shortened"] = {"factor": round(lo, 4),
                              "reason": f"the full motion would come closer than {margin} m to a seen surface"}
        path = path.scaled(lo)
    else:
        notes["shortened"] = None
    notes["min_clearance_m"] = round(_min_clearance(path, space.clearance), 4)
    return path, notes


def _min_clearance(path: CameraPath, clearance: Clearance) -> float:
    """Smallest clearance along the path, also between cameras (a fast move must not jump a wall)."""
    centres = path.centres
    between = [centres]
    if len(centres) > 1:
        for t in (0.25, 0.5, 0.75):
            between.append(centres[:-1] * (1 - t) + centres[1:] * t)
    return float(np.min(clearance(np.concatenate(between))))


def _motion_poses(preset: Preset, space: FreeSpace, scale: float) -> np.ndarray:
    p = preset.path
    n = p.frames
    s = ease(np.linspace(0.0, 1.0, n), p.easing)
    distance = p.distance_m * scale
    poses = np.repeat(np.eye(4)[None], n, axis=0)
    if p.motion == "dolly":
        poses[:, 2, 3] = distance * s
    elif p.motion == "strafe":
        poses[:, 0, 3] = distance * s
    elif p.motion == "out_and_back":
        # Integer frame arithmetic so frame i and frame n-1-i get bit-identical poses.
        half = (n - 1) / 2
        leg = np.array([min(i, n - 1 - i) / half for i in range(n)])
        poses[:, 2, 3] = distance * ease(leg, p.easing)
    elif p.motion == "zoom":
        half = n // 2
        inward = ease(np.linspace(0.0, 1.0, half + 1), p.easing)
        outward = ease(np.linspace(0.0, 1.0, n - half), p.easing)[1:]
        z = np.concatenate([distance * inward, distance - distance * (1 + p.back_fraction) * outward])
        poses[:, 2, 3] = z
    elif p.motion == "yaw":
        for i, a in enumerate(s * math.radians(p.yaw_deg)):
            poses[i] = yaw_pose(a, np.zeros(3))
    elif p.motion == "orbit":
        centre = np.array([0.0, 0.0, float(space.centre[2])])  # on the view axis, at eye height
        for i, a in enumerate(s * math.radians(p.arc_deg)):
            turn = yaw_pose(-a, np.zeros(3))[:3, :3]  # positive arc: camera moves right, turns left
            eye = centre + turn @ (-centre)
            poses[i] = look_at(eye, centre) if i else np.eye(4)
    return poses
