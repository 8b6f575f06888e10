"""Aligning one set of cameras (and what was reconstructed with them) onto another: a similarity fit."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import LyraAssetsError


@dataclass(frozen=True)
class Similarity:
    """x -> scale * rotation @ x + translation."""

    scale: float
    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,)

    def apply(self, points: np.ndarray) -> np.ndarray:
        return self.scale * points @ self.rotation.T + self.translation

    def apply_to_poses(self, c2w: np.ndarray) -> np.ndarray:
        """Camera-to-world poses (N, 4, 4) carried along: rotated, centres mapped; still rigid poses."""
        out = np.array(c2w, dtype=np.float64)
        out[:, :3, :3] = self.rotation @ out[:, :3, :3]
        out[:, :3, 3] = self.apply(out[:, :3, 3])
        return out


@dataclass(frozen=True)
class Alignment:
    transform: Similarity  # maps the source frame onto the target frame
    method: str
    rms_centre_error: float  # in target units, after the fit
    max_rotation_error_deg: float

    def notes(self) -> dict[str, Any]:
        return {"method": self.method, "scale": round(self.transform.scale, 8),
                "rotation": self.transform.rotation.round(8).tolist(),
                "translation": self.transform.translation.round(8).tolist(),
                "rms_centre_error": round(self.rms_centre_error, 6),
                "max_rotation_error_deg": round(self.max_rotation_error_deg, 4)}


def umeyama(source: np.ndarray, target: np.ndarray) -> Similarity:
    """The least-squares similarity taking points `source` (N, 3) onto `target` (Umeyama, 1991)."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    s, t = source - mu_s, target - mu_t
    u, d, vt = np.linalg.svd(t.T @ s / len(source))
    flip = np.diag([1.0, 1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt))])  # a rotation, never a mirror
    rotation = u @ flip @ vt
    scale = float(np.trace(np.diag(d) @ flip) / (s ** 2).sum(1).mean())
    return Similarity(scale, rotation, mu_t - scale * rotation @ mu_s)


def fit_cameras(source_c2w: np.ndarray, target_c2w: np.ndarray) -> Alignment:
    """The similarity taking cameras `source_c2w` (N, 4, 4) onto the same cameras in the target frame.

    Umeyama on the camera centres when they span a plane or more. Centres on a line (a straight dolly) or
    at one point (a turn on the spot) leave the rotation about that line open, so then the rotation is the
    average of the camera orientations' differences, and scale and offset follow from the centres given it
    (scale 1 when the centres do not move at all: nothing to measure it by, and nothing that depends on it).
    """
    if len(source_c2w) != len(target_c2w) or len(source_c2w) < 1:
        raise LyraAssetsError(f"camera alignment: {len(source_c2w)} source cameras for {len(target_c2w)} targets")
    src, dst = source_c2w[:, :3, 3], target_c2w[:, :3, 3]
    spread = np.linalg.svd(dst - dst.mean(0), compute_uv=False)
    if len(dst) >= 3 and spread[1] > 0.05 * spread[0] > 0:
        transform, method = umeyama(src, dst), "umeyama on camera centres"
    else:
        turns = target_c2w[:, :3, :3] @ np.transpose(source_c2w[:, :3, :3], (0, 2, 1))
        u, _, vt = np.linalg.svd(turns.sum(0))
        rotation = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt
        s_c, d_c = src - src.mean(0), dst - dst.mean(0)
        moved = (s_c ** 2).sum(1).mean()
        scale = float((d_c * (s_c @ rotation.T)).sum(1).mean() / moved) if moved > 1e-12 else 1.0
        transform = Similarity(scale, rotation, dst.mean(0) - scale * rotation @ src.mean(0))
        method = "camera orientations, then centres (the path is a line or a point)"
    if not transform.scale > 0:
        raise LyraAssetsError("the reconstruction's cameras move against the requested path (fitted scale "
                              f"{transform.scale:.3g}); the reconstruction failed, so the splats cannot be placed")
    moved_to = transform.apply_to_poses(source_c2w)
    rms = float(np.sqrt(((moved_to[:, :3, 3] - dst) ** 2).sum(1).mean()))
    cos = (np.einsum("nij,nij->n", moved_to[:, :3, :3], target_c2w[:, :3, :3]) - 1) / 2
    worst = float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).max())
    return Alignment(transform, method, rms, worst)
