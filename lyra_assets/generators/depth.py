"""The learned-depth generator: monocular depth from local weights, hole filling, and an explicit 3D memory.

1. The concept image's relative depth (depth_models.py: an ONNX file on a CPU, Marigold on a GPU) is put
   in metres by fitting its scale and shift to the ground: the lower rows of the image are assumed to show
   the floor `eye_height_m` below the camera, whose depth along every pixel's ray is known exactly; a robust
   fit keeps the rows that really are floor (a box standing there is outvoted). Known depths given in the
   sidecar replace the ground as anchors. Then the image is lifted into the memory (memory.py) as points.
2. Every camera of the path renders the memory. Pixels the memory covers are remembered, never generated
   again; only holes are filled (fill.py: classical, or a diffusers inpainting pipeline). The depth of a
   large hole comes from the depth model run on the filled frame, its scale and shift fitted to the
   remembered depth around the hole; a thin crack takes the depth of its nearest remembered pixel. The
   filled pixels join the memory. Each frame is conditioned on the memory's render, never on the previous
   frame alone, so nothing drifts, and a revisited pose shows what it showed the first time.
3. The walkthrough's manifest records, per frame, how much was remembered and how much generated.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage
from scipy.spatial import cKDTree

from .. import __version__
from ..errors import LyraAssetsError
from ..images import ConceptImage
from ..motions import FreeSpace
from ..presets import Preset
from ..progress import Progress
from ..settings import validated
from ..trajectory import CameraPath, intrinsics_from_fov, pixel_rays
from ..walkthrough import Walkthrough
from .depth_models import DepthModel, RelativeDepth, load_depth_model
from .fill import ClassicalFill, DiffusersInpaint, Fill
from .memory import NEAR_M, PointMemory, Rendered

UNKNOWN_LICENCE = "unknown: set [depth] licence"
MODEL_MIN_HOLE = 0.002  # holes smaller than this fraction of a frame are cracks: nearest depth, no model run
FIT_TOLERANCE = 0.05  # relative residual of an inlier in the robust scale/shift fit
ALIGN_BAND_PX = 7  # remembered pixels this close to a hole anchor its depth
CLEARANCE_POINTS = 60_000  # the free-space check looks at most this many lifted points


class DepthSettings(BaseModel):
    """The `[depth]` settings table (sidecar, drop-folder defaults or --depth-model)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: Path | None = Field(None, description=".onnx file (Depth-Anything V2, MiDaS) or a Marigold folder")
    inpaint: Path | None = Field(None, description="diffusers inpainting folder; unset: classical fill")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    licence: str = Field(UNKNOWN_LICENCE, min_length=1, description="the weights' licence, for provenance")
    output: Literal["disparity", "depth"] | None = Field(
        None, description="what an ONNX model predicts: relative inverse depth (Depth-Anything, MiDaS) or depth")
    input_size: int | None = Field(None, ge=14, le=4096, description="longer side fed to a dynamic-size ONNX")
    steps: int = Field(4, ge=1, le=100, description="Marigold's denoising steps")
    inpaint_steps: int = Field(25, ge=1, le=200)
    seed: int = 0
    ground_rows: float = Field(0.3, gt=0.05, le=0.9, description="lower fraction of the image that may be floor")
    known_depth: list[tuple[float, float, float]] = Field(
        [], description="(x, y, metres) in concept-image pixels: anchors for the metric scale instead of the floor")
    max_depth_m: float = Field(200.0, gt=1.0, le=1e5, description="sky and anything farther is put this far")


@dataclass(frozen=True)
class Lifted:
    """The concept image at the size it is lifted at, its metric depth and camera, and how the fit went."""

    rgb: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    scale_shift: tuple[float, float]
    fit: dict[str, Any]


class DepthGenerator:
    name = "depth"
    summary = "learned monocular depth from local weights (ONNX on a CPU, Marigold on a GPU) with a 3D memory"
    licence = UNKNOWN_LICENCE  # replaced by [depth] licence
    needs_gpu = False  # ONNX runs on a CPU; Marigold and inpainting use a GPU when there is one
    takes_prompt = True  # the inpainting pipeline's prompt (set_text)
    operator_only = ("model", "inpaint")
    notice: str | None = None
    settings_model = DepthSettings

    def __init__(self, preset: Preset, settings: dict[str, Any], source: str = "settings", *,
                 depth_model: DepthModel | None = None) -> None:
        """`depth_model` lets a Python caller supply any object with DepthModel's interface instead of
        `[depth] model` (the ground-truth tests and benchmark pass a labelled true-depth double)."""
        self.settings = s = validated(DepthSettings, settings, source, "[depth]")
        self.preset, self.prompt = preset, None
        self.licence = s.licence
        if s.licence == UNKNOWN_LICENCE:
            self.notice = "the depth model's licence is unknown to lyra-assets: set [depth] licence to record it"
        # Weights are loaded (and a missing or wrong file refused) now, before any work.
        self.model = depth_model or load_depth_model(s.model, s.device, s.output, s.input_size, s.steps)
        self.fill: Fill = (ClassicalFill() if s.inpaint is None
                           else DiffusersInpaint(s.inpaint, s.device, s.inpaint_steps, s.seed))
        self._lifted: tuple[str, Lifted] | None = None

    # -- the Generator interface ------------------------------------------------------------------------

    def set_text(self, prompt: str | None, image_path: Path | None) -> None:
        """The job's prompt, for the inpainting pipeline (the classical fill needs none)."""
        self.prompt = prompt

    def survey(self, image: ConceptImage) -> FreeSpace:
        lifted = self._lift(image)
        h, w = lifted.depth.shape
        centre = lifted.depth[h // 3: 2 * h // 3, w // 3: 2 * w // 3]
        solid = centre[centre < self.settings.max_depth_m]  # the sky is no surface to walk up to
        depth = float(np.percentile(solid, 90)) if solid.size else self.preset.scene.reference_depth_m
        points = (pixel_rays(lifted.K, w, h) * lifted.depth[..., None]).reshape(-1, 3)
        points = points[:: max(1, len(points) // CLEARANCE_POINTS)]
        tree = cKDTree(points)
        return FreeSpace(depth=depth, centre=np.array([0.0, 0.0, depth / 2]),
                         clearance=lambda p: tree.query(np.asarray(p, float))[0])

    def generate(self, image: ConceptImage, path: CameraPath, progress: Progress,
                 memory: Walkthrough | None = None) -> Walkthrough:
        started = time.perf_counter()
        n, h, w = len(path), path.height, path.width
        world = PointMemory()
        if memory is None:
            lifted = self._lift(image)
            everything = np.ones(lifted.depth.shape, bool)
            world.add(lifted.rgb, lifted.depth, everything, lifted.depth >= self.settings.max_depth_m, everything,
                      lifted.K, np.eye(4), frame=0)
            first_frame, fallback = 1, lifted.scale_shift
            fit = lifted.fit
        else:
            first_frame = seed_memory(world, memory)
            fallback, fit = None, {"method": f"continued from a walkthrough of {len(memory)} frames"}
        frames = np.empty((n, h, w, 3), np.uint8)
        depth = np.empty((n, h, w), np.float32)
        observed = np.empty((n, h, w), bool)
        per_frame = []
        for i in range(n):
            K, c2w = path.K[i], path.c2w[i]
            seen = world.render(K, c2w, w, h)
            holes = ~seen.covered
            frames[i], depth[i], sky, how = seen.colour, seen.depth, seen.sky, "none"
            if holes.any():
                frames[i] = self.fill(seen.colour, holes, self.prompt)
                depth[i], how = self._hole_depth(frames[i], seen, holes, K, c2w, fallback)
                sky = np.where(holes, depth[i] >= self.settings.max_depth_m, seen.sky)
                world.add(frames[i], depth[i], np.zeros((h, w), bool), sky, holes, K, c2w, frame=first_frame + i)
            # The sky stays in the memory (a revisit shows it again) but is no surface: unknown depth for fusion.
            depth[i][sky] = 0.0
            observed[i] = seen.observed
            generated = float(holes.mean())
            per_frame.append({"remembered": round(1.0 - generated, 5), "generated": round(generated, 5),
                              "hole_depth": how})
            progress("generate", i + 1, n, f"{generated:.1%} generated")
        s = self.settings
        info = {"generator": {
            "name": self.name, "version": __version__, "licence": self.licence,
            "depth": {"model": self.model.description, "fill": self.fill.description, "metric_fit": fit,
                      "memory_points": len(world), "frames": per_frame,
                      "generated_mean": round(float(np.mean([f["generated"] for f in per_frame])), 5),
                      "max_depth_m": s.max_depth_m}},
            "timings_s": {"generate": round(time.perf_counter() - started, 3)}}
        return Walkthrough(frames, depth, observed, path, image.pixels, info)

    # -- depth in metres --------------------------------------------------------------------------------

    def _lift(self, image: ConceptImage) -> Lifted:
        """The concept image at (at most) the frames' width, with metric depth; cached per image."""
        if self._lifted is not None and self._lifted[0] == image.sha256:
            return self._lifted[1]
        s, camera = self.settings, self.preset.camera
        scale = min(1.0, camera.width / image.width)
        size = (max(2, round(image.width * scale)), max(2, round(image.height * scale)))
        rgb = cv2.resize(image.pixels, size, interpolation=cv2.INTER_AREA) if scale < 1 else image.pixels
        K = intrinsics_from_fov(camera.hfov_deg, size[0], size[1])
        relative = self._predict(rgb, K, np.eye(4))
        if s.known_depth:
            xy = np.array([(x * scale, y * scale) for x, y, _ in s.known_depth])
            cols = np.clip(xy[:, 0].astype(int), 0, size[0] - 1)
            rows = np.clip(xy[:, 1].astype(int), 0, size[1] - 1)
            metres = np.array([m for _, _, m in s.known_depth])
            a, b = fit_anchors(relative.values[rows, cols], in_model_space(metres, relative.kind))
            fit = {"method": "known depth from [depth] known_depth", "anchors": len(metres)}
        else:
            target = ground_depth(K, np.eye(4), size[0], size[1], self.preset.scene.eye_height_m)
            rows = np.arange(size[1])[:, None] >= (1 - s.ground_rows) * size[1]
            candidates = rows & (target > 0) & (target < s.max_depth_m)
            found = fit_affine(relative.values[candidates], in_model_space(target[candidates], relative.kind))
            if found is None:
                raise LyraAssetsError(
                    f"{image.name}: the depth model's output does not fit a floor {self.preset.scene.eye_height_m} m "
                    "below the camera in the lower image rows; give anchors as [depth] known_depth = "
                    "[[x, y, metres], ...] (concept-image pixels) or check [scene] eye_height_m")
            a, b, inliers = found
            fit = {"method": "ground plane", "eye_height_m": self.preset.scene.eye_height_m,
                   "ground_rows": s.ground_rows, "inlier_fraction": round(inliers, 4)}
        fit.update({"model_output": relative.kind, "scale": a, "shift": b})
        lifted = Lifted(rgb, to_metres(relative, a, b, s.max_depth_m), K, (a, b), fit)
        self._lifted = (image.sha256, lifted)
        return lifted

    def _predict(self, rgb: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> RelativeDepth:
        relative = self.model(rgb, K, c2w)
        if relative.values.shape != rgb.shape[:2] or not np.isfinite(relative.values).all():
            raise LyraAssetsError(f"depth model {self.model.description}: gave {relative.values.shape} "
                                  f"values (finite: {bool(np.isfinite(relative.values).all())}) for a "
                                  f"{rgb.shape[1]}x{rgb.shape[0]} image")
        return relative

    def _hole_depth(self, rgb: np.ndarray, seen: Rendered, holes: np.ndarray, K: np.ndarray, c2w: np.ndarray,
                    fallback: tuple[float, float] | None) -> tuple[np.ndarray, str]:
        """Metric depth for the hole pixels of a filled frame; the rest stays as remembered."""
        remembered, known = seen.depth, ~holes
        if known.any() and holes.mean() < MODEL_MIN_HOLE:  # cracks: the nearest remembered depth
            _, (rows, cols) = ndimage.distance_transform_edt(holes, return_indices=True)
            sky_depth = np.float32(self.settings.max_depth_m)  # a crack in the sky stays sky
            return np.where(seen.sky[rows, cols], sky_depth, remembered[rows, cols]), "nearest"
        relative = self._predict(rgb, K, c2w)
        band = cv2.dilate(holes.astype(np.uint8), np.ones((2 * ALIGN_BAND_PX + 1,) * 2, np.uint8)).astype(bool)
        surface = known & ~seen.sky  # the sky's stand-in depth anchors nothing
        anchors = band & surface if (band & surface).sum() >= 30 else surface
        found = fit_affine(relative.values[anchors], in_model_space(remembered[anchors], relative.kind))
        how = "model, aligned to the remembered depth around the hole"
        if found is None:  # nothing remembered in view: the floor, then the concept image's scale
            target = ground_depth(K, c2w, rgb.shape[1], rgb.shape[0], self.preset.scene.eye_height_m)
            found = fit_affine(relative.values[target > 0], in_model_space(target[target > 0], relative.kind))
            how = "model, fitted to the floor"
        if found is None and fallback is None:
            raise LyraAssetsError("the depth model's output fits neither the remembered depth nor the floor in a "
                                  "view that shows nothing remembered; give the path fewer unseen views")
        a, b = found[:2] if found is not None else fallback
        if found is None:
            how = "model, at the concept image's scale"
        metres = to_metres(relative, a, b, self.settings.max_depth_m)
        return np.where(holes, metres, remembered).astype(np.float32), how


def seed_memory(world: PointMemory, walk: Walkthrough) -> int:
    """Lift an existing walkthrough into the memory, each frame adding only what the earlier ones did not
    cover. Returns the next free frame number."""
    for k in range(len(walk)):
        K, c2w = walk.path.K[k], walk.path.c2w[k]
        covered = world.render(K, c2w, walk.path.width, walk.path.height).covered
        world.add(walk.frames[k], walk.depth[k], walk.observed[k], np.zeros_like(covered), ~covered, K, c2w,
                  frame=k)
    return len(walk)


def ground_depth(K: np.ndarray, c2w: np.ndarray, width: int, height: int, eye_height: float) -> np.ndarray:
    """(H, W) depth along the camera z of the floor (world y = eye_height: the first camera stands eye_height
    above it, y down), 0 where a pixel's ray does not go down to it."""
    rays = pixel_rays(K, width, height) @ c2w[:3, :3].T  # world directions with camera-z = 1
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (eye_height - c2w[1, 3]) / rays[..., 1]
    return np.where((rays[..., 1] > 1e-6) & (t > NEAR_M), t, 0.0)


def in_model_space(metres: np.ndarray, kind: str) -> np.ndarray:
    """Metric depth as the model's quantity: inverse depth for a disparity model, depth otherwise."""
    return 1.0 / metres if kind == "disparity" else metres


def to_metres(relative: RelativeDepth, a: float, b: float, max_depth: float) -> np.ndarray:
    """Affine-corrected model output in metres; what lands beyond max_depth (sky) is put at max_depth."""
    value = a * relative.values.astype(np.float64) + b
    if relative.kind == "disparity":
        with np.errstate(divide="ignore"):
            metres = np.where(value > 1.0 / max_depth, 1.0 / value, max_depth)
    else:
        metres = np.clip(value, NEAR_M, max_depth)
    return metres.astype(np.float32)


def fit_affine(model: np.ndarray, target: np.ndarray, iterations: int = 256,
               seed: int = 0) -> tuple[float, float, float] | None:
    """Robust target ≈ a * model + b (a > 0). MSAC over pairs (relative residuals, truncated at
    FIT_TOLERANCE, so the line that fits its inliers best wins, not merely the one with most points within
    the tolerance), then least squares on the inliers at a tolerance halved each round: a wall meeting the
    floor lies within 5 % of the floor near the corner and must not bend the fit. Returns
    (a, b, fraction within FIT_TOLERANCE), or None if fewer than a fifth of the points agree."""
    m, t = np.asarray(model, np.float64).ravel(), np.asarray(target, np.float64).ravel()
    ok = np.isfinite(m) & np.isfinite(t) & (t > 0)
    m, t = m[ok], t[ok]
    if len(m) < 2:
        return None
    if np.ptp(m) <= 1e-6 * np.abs(m).max():  # one value (a wall seen square on): the scale alone, no shift
        a = float(np.median(t / m)) if (m > 0).all() else 0.0
        fraction = float((np.abs(a * m - t) < FIT_TOLERANCE * t).mean())
        return (a, 0.0, fraction) if a > 0 and fraction >= 0.2 else None
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(m), min(len(m), 4000), replace=False)  # scoring subset: enough for a consensus
    i, j = rng.integers(0, len(m), (2, iterations))
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (t[i] - t[j]) / (m[i] - m[j])
    b = t[i] - a * m[i]
    good = np.isfinite(a) & (a > 0)
    if not good.any():
        return None
    a, b = a[good], b[good]
    residual = (a[:, None] * m[sample] + b[:, None] - t[sample]) / t[sample]
    best = int(np.argmin(np.minimum(residual**2, FIT_TOLERANCE**2).sum(axis=1)))
    best_a, best_b = a[best], b[best]
    for tolerance in (FIT_TOLERANCE, FIT_TOLERANCE / 2, FIT_TOLERANCE / 4):
        inliers = np.abs(best_a * m + best_b - t) < tolerance * t
        if inliers.sum() < 2 or np.ptp(m[inliers]) == 0:
            break
        best_a, best_b = np.polyfit(m[inliers], t[inliers], 1)
    fraction = float((np.abs(best_a * m + best_b - t) < FIT_TOLERANCE * t).mean())
    if best_a <= 0 or fraction < 0.2:
        return None
    return float(best_a), float(best_b), fraction


def fit_anchors(model: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Scale alone from one anchor, scale and shift (least squares) from more."""
    if len(model) == 1 or np.ptp(model) == 0:
        if not (model > 0).all():
            raise LyraAssetsError("[depth] known_depth: the depth model gives no usable value there")
        return float(np.median(target / model)), 0.0
    a, b = np.polyfit(model, target, 1)
    return float(a), float(b)
