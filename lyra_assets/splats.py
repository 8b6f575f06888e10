"""3D Gaussian splats: the 3DGS PLY format, alignment to our camera path, and rendering to RGB-D.

A generator that reconstructs its walkthrough as Gaussian splats (Lyra 2.0) hands them here; rendering them
at every walkthrough camera gives the depth the mesh stages fuse, so those stages run unchanged.

Conventions kept here:
- PLY layout (3DGS, as Lyra 2.0's reconstruction writes it): one `vertex` element with float properties
  x y z, nx ny nz (unused, written as 0), f_dc_0..2 (degree-0 spherical-harmonic coefficients: colour =
  0.5 + SH_C0 * f_dc), opacity (a logit), scale_0..2 (logs of the standard deviations along the Gaussian's
  axes), rot_0..3 (a quaternion w, x, y, z, not necessarily unit). Higher SH bands (f_rest_*) are ignored:
  the walkthrough needs one colour per Gaussian, and we never write them.
- Rendering follows gsplat's classic 3DGS rasterizer so the CUDA path and the CPU fallback agree: EWA
  projection with the Jacobian's view direction clamped to 1.3x the field of view, a 0.3 px^2 blur on the
  2D covariance, alpha = min(0.999, opacity * exp(-sigma)) skipping alpha < 1/255, front-to-back in 16x16
  pixel tiles sorted by camera depth, a pixel finished once its transmittance would fall to 1e-4, pixel
  (col, row) sampled at its centre (col + 0.5, row + 0.5), black background. Depth is the expected camera z
  (sum of weight * z of each Gaussian's centre, over the accumulated alpha), kept where reliable.
- torch (and gsplat, for CUDA) are imported only when rendering: reading, writing and aligning splats need
  numpy alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .errors import LyraAssetsError
from .files import read_npz, write_atomically
from .progress import Progress, silent
from .trajectory import CameraPath, pixel_rays, project

SH_C0 = 0.28209479177387814  # the degree-0 spherical harmonic, 1 / (2 sqrt(pi))
PLY_PROPERTIES = ("x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                  "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")

# The rasterizer's constants, as in gsplat's classic mode (see the module docstring).
NEAR_PLANE = 0.01
BLUR_PX2 = 0.3
ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
TRANSMITTANCE_MIN = 1e-4
SIGMA_MAX = 20.0  # exp(-20) * opacity is far below ALPHA_MIN: anything beyond is skipped all the same
EXTENT_SIGMAS = 3.33  # a Gaussian's screen footprint reaches this many standard deviations at most
TILE = 16
CHUNK = 64  # Gaussians per tile blended per step of the CPU renderer's front-to-back loop
TILE_BATCH = 64  # tiles blended together on the CPU: steps of 64 x 256 pixels x 64 Gaussians, ~1M pairs
MAX_DEPTH_SPREAD = 0.1  # render_path keeps depth where the blend's depths spread by at most 10 %
GSPLAT_CAMERAS = 8  # cameras per gsplat call: bounded GPU memory at 832x480

Renderer = Literal["auto", "gsplat", "cpu"]


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


# -- quaternions (w, x, y, z), in numpy: scipy.spatial would double the import time of this module ------


def quaternion_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton products a * b of (N, 4) quaternions: the rotation b, then a."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], axis=-1)


def quaternion_matrices(q: np.ndarray) -> np.ndarray:
    """(N, 3, 3) rotation matrices of (N, 4) unit quaternions."""
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
                     2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
                     2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], axis=-1).reshape(-1, 3, 3)


def quaternion_from_matrix(R: np.ndarray) -> np.ndarray:
    """The unit quaternion of one rotation matrix, from its largest diagonal term (stable for any angle)."""
    trace = np.trace(R)
    i = int(np.argmax([trace, R[0, 0], R[1, 1], R[2, 2]]))
    if i == 0:
        w = math.sqrt(1.0 + trace) / 2
        q = [w, (R[2, 1] - R[1, 2]) / (4 * w), (R[0, 2] - R[2, 0]) / (4 * w), (R[1, 0] - R[0, 1]) / (4 * w)]
    else:
        a, b, c = (i - 1, i % 3, (i + 1) % 3)
        v = math.sqrt(1.0 + R[a, a] - R[b, b] - R[c, c]) / 2
        q = [0.0, 0.0, 0.0, 0.0]
        q[0] = (R[c, b] - R[b, c]) / (4 * v)
        q[1 + a], q[1 + b], q[1 + c] = v, (R[b, a] + R[a, b]) / (4 * v), (R[c, a] + R[a, c]) / (4 * v)
    return np.array(q)


# -- PLY ------------------------------------------------------------------------------------------------

_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}
_PLY_FORMATS = {"binary_little_endian": "<", "binary_big_endian": ">", "ascii": None}


def read_ply(path: str | Path) -> GaussianSplats:
    """Gaussian splats from a 3DGS PLY (binary either endianness, or ASCII); extra properties are ignored."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LyraAssetsError(f"{path}: cannot read the splat PLY ({exc})") from exc
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise LyraAssetsError(f"{path}: not a PLY file (no 'ply' magic or no end_header)")
    body_start = data.index(b"\n", end) + 1
    header = data[:end].decode("ascii", errors="replace").splitlines()
    byte_order, count, fields = None, None, []
    seen_element = False
    for line in header:
        words = line.split()
        if not words:
            continue
        if words[0] == "format":
            if words[1] not in _PLY_FORMATS:
                raise LyraAssetsError(f"{path}: unknown PLY format {words[1]!r}")
            byte_order = _PLY_FORMATS[words[1]] or "ascii"
        elif words[0] == "element":
            if seen_element:
                break  # only the first element (the Gaussians) is read; 3DGS files have no other
            if words[1] != "vertex":
                raise LyraAssetsError(f"{path}: the first PLY element is {words[1]!r}, expected 'vertex'")
            seen_element, count = True, int(words[2])
        elif words[0] == "property" and seen_element:
            if words[1] == "list":
                raise LyraAssetsError(f"{path}: list property {words[-1]!r} in the vertex element; not 3DGS")
            if words[1] not in _PLY_TYPES:
                raise LyraAssetsError(f"{path}: unknown PLY property type {words[1]!r}")
            fields.append((words[2], _PLY_TYPES[words[1]]))
    if byte_order is None or count is None:
        raise LyraAssetsError(f"{path}: PLY header without a format line or a vertex element")
    missing = [name for name in PLY_PROPERTIES[:3] + PLY_PROPERTIES[6:] if name not in dict(fields)]
    if missing:
        raise LyraAssetsError(f"{path}: not a 3DGS splat PLY; missing properties {', '.join(missing)}")
    if byte_order == "ascii":
        rows = np.loadtxt(data[body_start:].decode("ascii").splitlines()[:count], ndmin=2)
        columns = {name: rows[:, i] for i, (name, _) in enumerate(fields)}
    else:
        dtype = np.dtype([(name, byte_order + kind) for name, kind in fields])
        if len(data) - body_start < count * dtype.itemsize:
            raise LyraAssetsError(f"{path}: truncated; the header announces {count} Gaussians")
        records = np.frombuffer(data, dtype=dtype, count=count, offset=body_start)
        columns = {name: records[name] for name, _ in fields}

    def stack(*names: str) -> np.ndarray:
        return np.stack([columns[n] for n in names], axis=1).astype(np.float32)

    return GaussianSplats(stack("x", "y", "z"), stack("rot_0", "rot_1", "rot_2", "rot_3"),
                          stack("scale_0", "scale_1", "scale_2"), columns["opacity"].astype(np.float32),
                          stack("f_dc_0", "f_dc_1", "f_dc_2"))


def write_ply(path: str | Path, splats: GaussianSplats) -> None:
    """A binary little-endian 3DGS PLY (the layout every 3DGS viewer reads), written atomically."""
    dtype = np.dtype([(name, "<f4") for name in PLY_PROPERTIES])
    records = np.zeros(len(splats), dtype=dtype)
    for names, values in ((("x", "y", "z"), splats.means), (("f_dc_0", "f_dc_1", "f_dc_2"), splats.f_dc),
                          (("scale_0", "scale_1", "scale_2"), splats.log_scales),
                          (("rot_0", "rot_1", "rot_2", "rot_3"), splats.quats)):
        for i, name in enumerate(names):
            records[name] = values[:, i]
    records["opacity"] = splats.opacity_logits
    header = ("ply\nformat binary_little_endian 1.0\n"
              "comment 3D Gaussian splats written by lyra-assets\n"
              f"element vertex {len(splats)}\n"
              + "".join(f"property float {name}\n" for name in PLY_PROPERTIES) + "end_header\n")

    def write(f) -> None:
        f.write(header.encode("ascii"))
        f.write(records.tobytes())

    write_atomically(Path(path), write)


def export_splats(splats: GaussianSplats, path: str | Path) -> None:
    """Write splats in the walkthrough's frame (OpenCV axes, metres) as a PLY in glTF's frame (Y up)."""
    from .export.gltf import OPENCV_TO_GLTF  # here, not at the top: walkthrough folders need no glTF library

    write_ply(path, splats.transformed(Similarity(1.0, np.diag(OPENCV_TO_GLTF.astype(np.float64)), np.zeros(3))))


# -- pruning -------------------------------------------------------------------------------------------


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


# -- alignment -----------------------------------------------------------------------------------------


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


# -- the reconstruction's cameras ---------------------------------------------------------------------


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


# -- rendering -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    frames: np.ndarray  # (N, H, W, 3) uint8
    depth: np.ndarray  # (N, H, W) float32 expected camera z; 0 where unreliable (see render_path)
    alpha: np.ndarray  # (N, H, W) float32 accumulated opacity
    renderer: str  # "gsplat" or "cpu"


def render_path(splats: GaussianSplats, path: CameraPath, renderer: Renderer = "auto", min_alpha: float = 0.5,
                max_depth_spread: float = MAX_DEPTH_SPREAD, progress: Progress = silent) -> Rendered:
    """RGB, depth and alpha of the splats at every camera of the path.

    Depth is kept only where it describes one surface, because fusion takes every depth it is given at face
    value (0 means unknown): where the splats cover at least `min_alpha` of the pixel (less is mostly
    background, i.e. nothing), and where the blended Gaussians' depths spread by at most `max_depth_spread`
    of their mean (standard deviation over mean): a pixel on a silhouette averages the object and what lies
    behind it into a depth where there is no surface at all. The spread comes from blending z^2 alongside
    z, as one more colour channel, so gsplat and the CPU renderer compute it alike.
    """
    torch = _import_torch()
    backend = _choose_renderer(renderer, torch)
    n, h, w = len(path), path.height, path.width
    frames = np.empty((n, h, w, 3), np.uint8)
    depth = np.empty((n, h, w), np.float32)
    alpha = np.empty((n, h, w), np.float32)
    scene = _TorchSplats.build(splats, torch, "cuda" if backend == "gsplat" else "cpu")
    w2c = path.w2c
    batch = GSPLAT_CAMERAS if backend == "gsplat" else 1
    for start in range(0, n, batch):
        stop = min(start + batch, n)
        if backend == "gsplat":
            blended, acc = _render_gsplat(scene, path.K[start:stop], w2c[start:stop], w, h, torch)
        else:
            blended, acc = (x[None] for x in _render_cpu(scene, path.K[start], w2c[start], w, h, torch))
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_z = blended[..., 3] / acc
            spread = np.sqrt(np.maximum(blended[..., 4] / acc - mean_z ** 2, 0.0))
            reliable = (acc >= min_alpha) & (spread <= max_depth_spread * mean_z)
        frames[start:stop] = np.clip(blended[..., :3] * 255.0 + 0.5, 0, 255).astype(np.uint8)
        alpha[start:stop] = acc
        depth[start:stop] = np.where(reliable, mean_z, 0.0)
        progress("render splats", stop, n, backend)
    return Rendered(frames, depth, alpha, backend)


def _import_torch():
    try:
        import torch
    except ImportError as exc:
        raise LyraAssetsError("rendering Gaussian splats needs torch: pip install 'lyra-assets[splats]' "
                              "(CPU), or 'lyra-assets[gpu]' for gsplat on CUDA") from exc
    return torch


def _choose_renderer(renderer: Renderer, torch) -> str:
    if renderer == "cpu":
        return "cpu"
    cuda = torch.cuda.is_available()
    try:
        import gsplat  # noqa: F401  (compiles its CUDA kernels on first use, so only import it here)
        have_gsplat = True
    except ImportError:
        have_gsplat = False
    if renderer == "gsplat" and not (cuda and have_gsplat):
        raise LyraAssetsError("renderer = 'gsplat' needs a CUDA GPU and gsplat: pip install 'lyra-assets[gpu]'"
                              f" (CUDA available: {cuda}, gsplat installed: {have_gsplat}); or use 'cpu'")
    return "gsplat" if cuda and have_gsplat else "cpu"


@dataclass(frozen=True)
class _TorchSplats:
    means: Any  # (N, 3) torch float32
    quats: Any  # (N, 4)
    scales: Any  # (N, 3)
    opacities: Any  # (N,)
    colours: Any  # (N, 3)
    covariances: Any  # (N, 3, 3) world-frame covariance

    @classmethod
    def build(cls, splats: GaussianSplats, torch, device: str) -> _TorchSplats:
        def tensor(a: np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device)

        quats = splats.unit_quats
        rotation = tensor(quaternion_matrices(quats))
        scales = tensor(splats.scales)
        axes = rotation * scales[:, None, :]  # columns: the Gaussian's axes times their standard deviations
        return cls(tensor(splats.means), tensor(quats), scales, tensor(splats.opacities),
                   tensor(splats.colours), axes @ axes.transpose(1, 2))


def _render_gsplat(scene: _TorchSplats, K: np.ndarray, w2c: np.ndarray, width: int, height: int, torch):
    """C cameras with gsplat on CUDA: (C, H, W, 5) blended r, g, b, z, z^2 and (C, H, W) alpha."""
    import gsplat

    viewmats = torch.from_numpy(w2c.astype(np.float32)).cuda()
    z = torch.einsum("cj,nj->cn", viewmats[:, 2, :3], scene.means) + viewmats[:, 2, 3:]
    features = torch.cat([scene.colours.expand(len(z), -1, -1), z[..., None], z[..., None] ** 2], -1)
    blended, alphas, _ = gsplat.rasterization(
        scene.means, scene.quats, scene.scales, scene.opacities, features, viewmats,
        torch.from_numpy(K.astype(np.float32)).cuda(), width, height, near_plane=NEAR_PLANE, eps2d=BLUR_PX2,
        render_mode="RGB", rasterize_mode="classic")
    return blended.cpu().numpy(), alphas[..., 0].cpu().numpy()


def _render_cpu(scene: _TorchSplats, K: np.ndarray, w2c: np.ndarray, width: int, height: int, torch):
    """One camera, in torch on the CPU: (H, W, 5) blended r, g, b, z, z^2 and (H, W) alpha.

    Tiles are blended TILE_BATCH at a time, CHUNK Gaussians of each tile's depth-sorted list per step (a
    tile with a shorter list is padded with weightless entries), so each step is a few large tensor
    operations rather than many small ones.
    """
    tiles_x, tiles_y = -(-width // TILE), -(-height // TILE)
    blended = torch.zeros((tiles_y * tiles_x, TILE * TILE, 5))
    acc = torch.zeros((tiles_y * tiles_x, TILE * TILE))
    projected = _project(scene, K, w2c, width, height, torch)
    if projected is not None:
        mean2d, conic, opacity, features, tile_ids, order = projected
        per_tile = torch.bincount(tile_ids, minlength=tiles_x * tiles_y)
        starts = torch.cumsum(per_tile, 0) - per_tile
        ys, xs = torch.meshgrid(torch.arange(TILE), torch.arange(TILE), indexing="ij")
        offsets = torch.stack([xs.flatten(), ys.flatten()], 1) + 0.5  # pixel centres within a tile
        for group in torch.nonzero(per_tile).flatten().split(TILE_BATCH):
            corner = torch.stack([group % tiles_x, group // tiles_x], 1) * TILE
            blended[group], acc[group] = _blend_tiles(corner[:, None, :] + offsets[None], order, starts[group],
                                                      per_tile[group], mean2d, conic, opacity, features, torch)

    def image(tiles):  # (tiles, TILE * TILE, ...) -> (H, W, ...)
        grid = tiles.view(tiles_y, tiles_x, TILE, TILE, *tiles.shape[2:]).transpose(1, 2)
        return grid.reshape(tiles_y * TILE, tiles_x * TILE, *tiles.shape[2:])[:height, :width].numpy()

    return image(blended), image(acc)


def _project(scene: _TorchSplats, K: np.ndarray, w2c: np.ndarray, width: int, height: int, torch):
    """EWA projection of every Gaussian, culled to the screen, and its (tile, depth)-sorted tile list."""
    R = torch.from_numpy(w2c[:3, :3].astype(np.float32))
    t = torch.from_numpy(w2c[:3, 3].astype(np.float32))
    fx, fy, cx, cy = (float(v) for v in (K[0, 0], K[1, 1], K[0, 2], K[1, 2]))
    cam = scene.means @ R.T + t
    keep = (cam[:, 2] > NEAR_PLANE) & (scene.opacities >= ALPHA_MIN)
    idx = torch.nonzero(keep).flatten()
    if len(idx) == 0:
        return None
    cam, opacity = cam[idx], scene.opacities[idx]
    x, y, z = cam.unbind(1)
    # The Jacobian of the perspective map is taken at the Gaussian's view direction clamped to 1.3x the
    # field of view, as the 3DGS reference does: off-screen Gaussians near the camera plane would otherwise
    # get enormous footprints.
    lim_x = (width / fx) * 0.15
    lim_y = (height / fy) * 0.15
    tx = z * torch.clamp(x / z, -(cx / fx + lim_x), (width - cx) / fx + lim_x)
    ty = z * torch.clamp(y / z, -(cy / fy + lim_y), (height - cy) / fy + lim_y)
    J = torch.zeros((len(idx), 2, 3))
    J[:, 0, 0], J[:, 0, 2] = fx / z, -fx * tx / z ** 2
    J[:, 1, 1], J[:, 1, 2] = fy / z, -fy * ty / z ** 2
    cov = J @ (R @ scene.covariances[idx] @ R.T) @ J.transpose(1, 2)
    a, b, c = cov[:, 0, 0] + BLUR_PX2, cov[:, 0, 1], cov[:, 1, 1] + BLUR_PX2
    det = a * c - b * b
    mean2d = torch.stack([fx * x / z + cx, fy * y / z + cy], 1)
    # Where a Gaussian's alpha would stay under ALPHA_MIN it is skipped anyway: its footprint ends there.
    extent = torch.clamp(torch.sqrt(2.0 * torch.log(opacity / ALPHA_MIN)), max=EXTENT_SIGMAS)
    rx, ry = torch.ceil(extent * torch.sqrt(a)), torch.ceil(extent * torch.sqrt(c))
    visible = ((det > 0) & (mean2d[:, 0] + rx > 0) & (mean2d[:, 0] - rx < width)
               & (mean2d[:, 1] + ry > 0) & (mean2d[:, 1] - ry < height))
    if not visible.any():
        return None
    v = torch.nonzero(visible).flatten()
    mean2d, a, b, c, det, z, opacity, rx, ry = (q[v] for q in (mean2d, a, b, c, det, z, opacity, rx, ry))
    conic = torch.stack([c / det, -b / det, a / det], 1)
    features = torch.cat([scene.colours[idx[v]], z[:, None], z[:, None] ** 2], 1)  # what is blended

    tiles_x, tiles_y = -(-width // TILE), -(-height // TILE)
    tx0 = torch.clamp(torch.floor((mean2d[:, 0] - rx) / TILE), 0, tiles_x).long()
    tx1 = torch.clamp(torch.floor((mean2d[:, 0] + rx) / TILE) + 1, 0, tiles_x).long()
    ty0 = torch.clamp(torch.floor((mean2d[:, 1] - ry) / TILE), 0, tiles_y).long()
    ty1 = torch.clamp(torch.floor((mean2d[:, 1] + ry) / TILE) + 1, 0, tiles_y).long()
    span_x = tx1 - tx0
    counts = span_x * (ty1 - ty0)
    gaussian = torch.repeat_interleave(torch.arange(len(v)), counts)
    local = torch.arange(len(gaussian)) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    tile_ids = (ty0[gaussian] + local // span_x[gaussian]) * tiles_x + tx0[gaussian] + local % span_x[gaussian]
    depth_rank = torch.empty(len(v), dtype=torch.long)
    depth_rank[torch.argsort(z, stable=True)] = torch.arange(len(v))
    order = torch.argsort(tile_ids * len(v) + depth_rank[gaussian])
    return mean2d, conic, opacity, features, tile_ids, gaussian[order]


def _blend_tiles(pixels, order, starts, counts, mean2d, conic, opacity, features, torch):
    """Front-to-back alpha compositing of B tiles' depth-sorted Gaussians over their pixels (B, P, 2)."""
    b, n = pixels.shape[:2]
    transmittance = torch.ones((b, n))
    done = torch.zeros((b, n), dtype=torch.bool)
    blended = torch.zeros((b, n, features.shape[1]))
    for start in range(0, int(counts.max()), CHUNK):
        rank = start + torch.arange(CHUNK)
        listed = rank[None] < counts[:, None]  # (B, C): padding past a tile's list has no weight
        g = order[torch.clamp(starts[:, None] + rank[None], max=len(order) - 1)]
        d = pixels[:, :, None, :] - mean2d[g][:, None]  # (B, P, C, 2)
        q = conic[g][:, None]
        sigma = 0.5 * (q[..., 0] * d[..., 0] ** 2 + q[..., 2] * d[..., 1] ** 2) + q[..., 1] * d[..., 0] * d[..., 1]
        # alpha >= ALPHA_MIN needs sigma <= log(255): clamping sigma first keeps exp() out of the denormal
        # range, where CPU float arithmetic is a hundred times slower, without changing any kept alpha.
        alpha = torch.clamp(opacity[g][:, None] * torch.exp(-torch.clamp(sigma, max=SIGMA_MAX)), max=ALPHA_MAX)
        alpha = alpha * ((sigma >= 0) & (alpha >= ALPHA_MIN) & listed[:, None] & ~done[..., None])
        after = transmittance[..., None] * torch.cumprod(1.0 - alpha, -1)
        # A Gaussian that would bring the pixel's transmittance to the limit is not blended, and the pixel
        # is finished: after is non-increasing, so `included` is a prefix of each pixel's list, and the pixel
        # is finished exactly when the last `after` is at the limit.
        included = after > TRANSMITTANCE_MIN
        before = torch.cat([transmittance[..., None], after[..., :-1]], -1)
        blended += torch.einsum("bpc,bck->bpk", alpha * before * included, features[g])
        transmittance = torch.minimum(transmittance, after.masked_fill(~included, 1.0).amin(-1))
        done |= ~included[..., -1]
        if bool(done.all()):
            break
    return blended, 1.0 - transmittance


# -- what the input image saw -------------------------------------------------------------------------


def observed_from_first_view(depth: np.ndarray, path: CameraPath, tolerance: float = 0.05) -> np.ndarray:
    """(N, H, W) bool: pixels showing a surface point the first frame (the input image) saw.

    Frame 0 is the input image itself, so all of it is observed. In later frames a pixel is observed when
    its depth point projects into frame 0 and lies within `tolerance` (relative) of the depth frame 0 has
    there: neither hidden behind what frame 0 saw nor in front of it (new geometry). "There" is the span of
    the four pixel centres around the projection, so surfaces seen at a grazing angle, whose depth changes
    fast from pixel to pixel, still match. Everything else the generator made up.
    """
    n, h, w = depth.shape
    observed = np.zeros(depth.shape, bool)
    observed[0] = True
    first_near = np.where(depth[0] > 0, depth[0], np.inf)  # unknown depth matches nothing: inf for the
    first_far = depth[0]  # nearest of the four, 0 for the farthest
    for i in range(1, n):
        valid = depth[i] > 0
        cam = pixel_rays(path.K[i], w, h)[valid] * depth[i][valid, None]
        world = cam @ path.c2w[i, :3, :3].T + path.c2w[i, :3, 3]
        uv, z = project(path.K[0], path.w2c[0], world)
        inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
        col = np.clip(np.floor(np.nan_to_num(uv[:, 0]) - 0.5), 0, w - 2).astype(int)
        row = np.clip(np.floor(np.nan_to_num(uv[:, 1]) - 0.5), 0, h - 2).astype(int)
        corners = [(row, col), (row, col + 1), (row + 1, col), (row + 1, col + 1)]
        near = np.min([first_near[r, c] for r, c in corners], axis=0)
        far = np.max([first_far[r, c] for r, c in corners], axis=0)
        observed[i][valid] = inside & (z >= near * (1 - tolerance)) & (z <= far * (1 + tolerance))
    return observed
