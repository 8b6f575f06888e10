"""Gaussian splats as 3DGS stores them, and pruning the floaters a reconstruction from video leaves."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import LyraAssetsError
from ..rotations import quaternion_from_matrix, quaternion_product
from .align import Similarity

SH_C0 = 0.28209479177387814  # the degree-0 spherical harmonic, 1 / (2 sqrt(pi))


@dataclass(frozen=True)
class GaussianSplats:
    """N Gaussians, with their parameters stored as the PLY stores them (logit opacity, log scales)."""

    means: np.ndarray  # (N, 3) float32 world positions
    quats: np.ndarray  # (N, 4) float32 quaternions w, x, y, z of the Gaussian's axes, as stored: any length
    log_scales: np.ndarray  # (N, 3) float32 log standard deviations along those axes
    opacity_logits: np.ndarray  # (N,) float32
    f_dc: np.ndarray  # (N, 3) float32 degree-0 SH coefficients

    def __post_init__(self) -> None:
        n = len(self.means)
        shapes = {"means": (n, 3), "quats": (n, 4), "log_scales": (n, 3), "opacity_logits": (n,), "f_dc": (n, 3)}
        for name, shape in shapes.items():
            value = np.asarray(getattr(self, name), dtype=np.float32)
            if value.shape != shape:
                raise LyraAssetsError(f"Gaussian splats: {name} must have shape {shape}, got {value.shape}")
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return len(self.means)

    @property
    def opacities(self) -> np.ndarray:
        return (0.5 + 0.5 * np.tanh(0.5 * self.opacity_logits.astype(np.float64))).astype(np.float32)  # sigmoid

    @property
    def unit_quats(self) -> np.ndarray:
        """(N, 4) float64 unit quaternions (a zero quaternion stays zero: prune drops those)."""
        q = self.quats.astype(np.float64)
        norm = np.linalg.norm(q, axis=1, keepdims=True)
        return q / np.where(norm > 0, norm, 1.0)

    @property
    def scales(self) -> np.ndarray:
        return np.exp(self.log_scales)

    @property
    def colours(self) -> np.ndarray:
        """(N, 3) linear RGB, clamped at 0 from below as 3DGS renderers do (1 is not a limit until display)."""
        return np.maximum(0.5 + SH_C0 * self.f_dc, 0.0)

    def subset(self, keep: np.ndarray) -> GaussianSplats:
        return GaussianSplats(self.means[keep], self.quats[keep], self.log_scales[keep],
                              self.opacity_logits[keep], self.f_dc[keep])

    def transformed(self, transform: Similarity) -> GaussianSplats:
        """The same Gaussians after x -> s R x + t: rotated axes, scales times s."""
        turn = quaternion_from_matrix(transform.rotation)
        return GaussianSplats(transform.apply(self.means.astype(np.float64)),
                              quaternion_product(turn[None], self.unit_quats),
                              self.log_scales + np.float32(math.log(transform.scale)), self.opacity_logits,
                              self.f_dc)


def prune(splats: GaussianSplats, min_opacity: float, max_scale_factor: float) -> tuple[GaussianSplats, dict]:
    """Drop floaters: nearly transparent Gaussians, and ones far larger than is typical of the scene.

    Reconstructions from generated video leave faint haze and a few huge blobs (at depth edges and in the
    sky) that would fuse into false surfaces. Size is judged against the median Gaussian, because a
    pixel-aligned reconstruction's sizes scale with the scene and its resolution, not with metres.
    """
    valid = (np.isfinite(splats.means).all(1) & np.isfinite(splats.log_scales).all(1)
              & np.isfinite(splats.opacity_logits) & np.isfinite(splats.f_dc).all(1)
              & (np.abs(splats.quats).sum(1) > 0))  # a zero quaternion has no orientation
    largest = splats.scales.max(axis=1)
    limit = max_scale_factor * float(np.median(largest[valid])) if valid.any() else 0.0
    faint = splats.opacities < min_opacity
    huge = largest > limit
    keep = valid & ~faint & ~huge
    if not keep.any():
        raise LyraAssetsError("every Gaussian was pruned as a floater; lower min_opacity or raise "
                              "max_scale_factor in the sidecar's [lyra2] table")
    stats = {"gaussians_in": len(splats), "kept": int(keep.sum()), "invalid": int((~valid).sum()),
             "below_min_opacity": int((valid & faint).sum()), "too_large": int((valid & ~faint & huge).sum()),
             "min_opacity": min_opacity, "max_scale": round(limit, 6)}
    return splats.subset(keep), stats
