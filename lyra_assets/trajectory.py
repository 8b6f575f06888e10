"""Camera paths: poses, intrinsics and image size of a walkthrough, and NVIDIA Lyra 2.0's trajectory files.

Conventions (DESIGN.md):
- OpenCV camera axes: x right, y down, z forward. Poses are camera-to-world 4x4 float64; world = first camera.
- Intrinsics K in pixels. Continuous image coordinates span [0, W] x [0, H]; the centre of pixel (col, row)
  is at (col + 0.5, row + 0.5). A centred principal point is therefore (W/2, H/2), as in Lyra's files.
  Every stage that turns pixels into rays or points into pixels goes through `pixel_centres`/`project`.
- Lyra 2.0 interchange: trajectory.npz with w2c (N,4,4) float32, intrinsics (N,3,3) float32, image_height
  and image_width int64; captions.json keyed by the first frame of each 80-frame chunk (0, 81, 161, ...).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import LyraAssetsError
from .files import read_npz, write_atomically
from .rotations import quaternion_from_matrix, quaternion_matrices

LYRA_CHUNK = 80  # Lyra 2.0 generates 80 new frames per chunk after the first frame


@dataclass(frozen=True)
class CameraPath:
    """N camera poses with their intrinsics, all rendered at one image size."""

    c2w: np.ndarray  # (N, 4, 4) float64 camera-to-world, OpenCV axes
    K: np.ndarray  # (N, 3, 3) float64 intrinsics in pixels
    width: int
    height: int
    fps: float = 16.0

    def __post_init__(self) -> None:
        c2w = np.asarray(self.c2w, dtype=np.float64)
        K = np.asarray(self.K, dtype=np.float64)
        if c2w.ndim != 3 or c2w.shape[1:] != (4, 4) or len(c2w) < 1:
            raise LyraAssetsError(f"camera path: poses must have shape (N, 4, 4), got {c2w.shape}")
        if K.shape == (3, 3):
            K = np.broadcast_to(K, (len(c2w), 3, 3)).copy()
        if K.shape != (len(c2w), 3, 3):
            raise LyraAssetsError(f"camera path: intrinsics must have shape ({len(c2w)}, 3, 3), got {K.shape}")
        if not (np.isfinite(c2w).all() and np.isfinite(K).all()):
            raise LyraAssetsError("camera path: poses or intrinsics contain NaN or infinity")
        if self.width < 2 or self.height < 2:
            raise LyraAssetsError(f"camera path: image size {self.width}x{self.height} is too small")
        object.__setattr__(self, "c2w", c2w)
        object.__setattr__(self, "K", K)

    def __len__(self) -> int:
        return len(self.c2w)

    @property
    def centres(self) -> np.ndarray:
        """(N, 3) camera centres in world metres."""
        return self.c2w[:, :3, 3]

    @property
    def w2c(self) -> np.ndarray:
        return np.linalg.inv(self.c2w)

    # -- Lyra 2.0 interchange -------------------------------------------------------------------------

    @classmethod
    def from_lyra_npz(cls, path: str | Path, fps: float = 16.0) -> "CameraPath":
        path = Path(path)
        arrays = read_npz(path, ".npz trajectory")
        missing = {"w2c", "intrinsics", "image_height", "image_width"} - arrays.keys()
        if missing:
            raise LyraAssetsError(
                f"{path}: missing {', '.join(sorted(missing))}; a Lyra trajectory.npz holds w2c (N,4,4), "
                "intrinsics (N,3,3), image_height and image_width"
            )
        w2c, K = arrays["w2c"], arrays["intrinsics"]
        if w2c.ndim != 3 or w2c.shape[1:] != (4, 4):
            raise LyraAssetsError(f"{path}: w2c must have shape (N, 4, 4), got {w2c.shape}")
        if K.shape != (len(w2c), 3, 3):
            raise LyraAssetsError(f"{path}: intrinsics must have shape ({len(w2c)}, 3, 3), got {K.shape}")
        height, width = (_scalar_int(arrays[key], path, key) for key in ("image_height", "image_width"))
        c2w = np.linalg.inv(w2c.astype(np.float64))
        if not np.allclose(c2w[0], np.eye(4), atol=1e-6):
            c2w = np.linalg.inv(c2w[0]) @ c2w  # our world is the first camera
        return cls(c2w=c2w, K=K.astype(np.float64), width=width, height=height, fps=fps)

    def to_lyra_npz(self, path: str | Path) -> None:
        write_atomically(
            Path(path),
            lambda f: np.savez(
                f,
                w2c=self.w2c.astype(np.float32),
                intrinsics=self.K.astype(np.float32),
                image_height=np.int64(self.height),
                image_width=np.int64(self.width),
            ),
        )

    # -- reshaping a path -----------------------------------------------------------------------------

    def resampled(self, n_frames: int) -> "CameraPath":
        """The same motion with n_frames poses: positions linear, rotations slerped, between neighbours."""
        if n_frames < 1:
            raise LyraAssetsError("a camera path needs at least one frame")
        if len(self) == 1:
            return CameraPath(np.repeat(self.c2w, n_frames, 0), np.repeat(self.K, n_frames, 0),
                              self.width, self.height, self.fps)
        s = np.linspace(0.0, len(self) - 1, n_frames)
        i0 = np.minimum(np.floor(s).astype(int), len(self) - 2)
        t = s - i0
        c2w = np.empty((n_frames, 4, 4))
        for k, (i, w) in enumerate(zip(i0, t)):
            c2w[k] = interpolate_pose(self.c2w[i], self.c2w[i + 1], w)
        K = self.K[i0] * (1 - t)[:, None, None] + self.K[i0 + 1] * t[:, None, None]
        return CameraPath(c2w, K, self.width, self.height, self.fps)

    def resized(self, width: int, height: int) -> "CameraPath":
        """The same cameras for frames of another size: the intrinsics scaled with it (pixels are square only
        if the aspect ratio is kept)."""
        scale = np.diag([width / self.width, height / self.height, 1.0])
        return CameraPath(self.c2w, scale @ self.K, width, height, self.fps)

    def with_lyra_frame_count(self) -> "CameraPath":
        """Resampled to the nearest frame count Lyra 2.0 accepts (1 + 80k)."""
        return self.resampled(lyra_frame_count(len(self)))

    def scaled(self, factor: float) -> "CameraPath":
        """Every camera's offset from the first one multiplied by factor (rotations unchanged)."""
        c2w = self.c2w.copy()
        c2w[:, :3, 3] = self.c2w[0, :3, 3] + factor * (self.c2w[:, :3, 3] - self.c2w[0, :3, 3])
        return CameraPath(c2w, self.K, self.width, self.height, self.fps)


def _scalar_int(value: np.ndarray, path: Path, key: str) -> int:
    flat = np.asarray(value).reshape(-1)
    if flat.size < 1 or not np.issubdtype(flat.dtype, np.number) or len(np.unique(flat)) != 1:
        raise LyraAssetsError(f"{path}: {key} must be a single integer, got {value!r}")
    return int(flat[0])


def lyra_frame_count(n_frames: int) -> int:
    """The nearest count of the form 1 + 80k (k >= 1): 81, 161, 241, ..."""
    return 1 + LYRA_CHUNK * max(1, round((n_frames - 1) / LYRA_CHUNK))


def write_lyra_captions(path: str | Path, prompt: str, n_frames: int) -> None:
    """captions.json with one caption per Lyra chunk, keyed by the chunk's first frame (0, 81, 161, ...)."""
    starts = [0] + list(range(1 + LYRA_CHUNK, n_frames, LYRA_CHUNK))
    text = json.dumps({str(k): prompt for k in starts}, indent=2, ensure_ascii=False)
    write_atomically(Path(path), lambda f: f.write(text.encode("utf-8")))


def read_lyra_captions(path: str | Path) -> dict[int, str]:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        return {int(k): str(v) for k, v in raw.items()}
    except (OSError, ValueError, AttributeError) as exc:
        raise LyraAssetsError(f"{path}: not a captions.json of frame index -> caption ({exc})") from exc


# -- geometry -----------------------------------------------------------------------------------------


def intrinsics_from_fov(hfov_deg: float, width: int, height: int) -> np.ndarray:
    """Square-pixel pinhole K with the given horizontal field of view and a centred principal point."""
    if not 1.0 <= hfov_deg <= 170.0:
        raise LyraAssetsError(f"horizontal field of view {hfov_deg} deg is outside 1..170 deg")
    f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def pixel_centres(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) continuous coordinates of every pixel centre, each (H, W) float64."""
    return np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)


def pixel_rays(K: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H, W, 3) camera-frame ray directions through pixel centres, with z = 1 (so depth = ray parameter)."""
    u, v = pixel_centres(width, height)
    return np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1)


def project(K: np.ndarray, w2c: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points (..., 3) to continuous pixel coordinates (..., 2) and camera depth z (...)."""
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = np.stack([K[0, 0] * cam[..., 0] / z + K[0, 2], K[1, 1] * cam[..., 1] / z + K[1, 2]], axis=-1)
    return uv, z


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera-to-world pose at eye looking at target, with image-down as close to world +y as possible."""
    down = np.array([0.0, 1.0, 0.0])
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(down, z)
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = x, y, z, eye
    return pose


def yaw_pose(yaw_rad: float, position: np.ndarray) -> np.ndarray:
    """Camera turned by yaw about the world's vertical (y) axis; positive yaw turns to the right."""
    c, s = math.cos(yaw_rad), math.sin(yaw_rad)
    pose = np.eye(4)
    pose[:3, :3] = [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]
    pose[:3, 3] = position
    return pose


def interpolate_pose(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Pose between a (t=0) and b (t=1): translation linear, rotation by quaternion slerp."""
    qa, qb = quaternion_from_matrix(a[:3, :3]), quaternion_from_matrix(b[:3, :3])
    if np.dot(qa, qb) < 0:
        qb = -qb
    dot = float(np.clip(np.dot(qa, qb), -1.0, 1.0))
    if dot > 0.9995:
        q = qa + t * (qb - qa)
    else:
        theta = math.acos(dot)
        q = (math.sin((1 - t) * theta) * qa + math.sin(t * theta) * qb) / math.sin(theta)
    pose = np.eye(4)
    pose[:3, :3] = quaternion_matrices(q / np.linalg.norm(q))[0]
    pose[:3, 3] = (1 - t) * a[:3, 3] + t * b[:3, 3]
    return pose


def ease(t: np.ndarray, kind: str) -> np.ndarray:
    """Easing of a 0..1 parameter: 'linear', or 'smooth' (cosine ease-in-out: starts and stops gently)."""
    t = np.asarray(t, dtype=np.float64)
    if kind == "linear":
        return t
    if kind == "smooth":
        return 0.5 - 0.5 * np.cos(np.pi * t)
    raise LyraAssetsError(f"unknown easing {kind!r}; use 'linear' or 'smooth'")
