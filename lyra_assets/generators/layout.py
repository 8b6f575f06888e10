"""The embedded generator: lift the concept image into a 3D layout and walk the camera through it.

No GPU, no weights, deterministic. Two kinds of layout, decided per image (the sidecar's `[layout] scene`
can force one) and recorded in the manifest:

- "room": an interior with a back wall, by "Tour Into the Picture" (Horry et al., 1997).
  1. The dominant vanishing point of the picture is found from its line segments (or given in the sidecar).
     The room's depth axis points through it; the room is upright in the camera's frame.
  2. A back-wall rectangle around the vanishing point (estimated from where the receding lines end, or
     given) fixes the box: the floor lies `eye_height_m` below the camera, so the back wall's bottom edge
     gives its depth, its side edges the side walls, its top edge the ceiling. All in metres.
  3. Each of the six faces gets a texture by projecting its texels into the concept image. Texels the image
     never saw (behind the camera, under it, outside the frame) are filled by mirror extension and marked
     synthesised.
  4. Every camera of the path ray casts the same box, so depth is exact and a revisited pose renders the
     identical frame.
- "outdoor" and "aerial": a ground plane, pop-ups standing on it and a sky dome (open_scene.py), rendered
  by scene_render.py. An aerial view is the same scene seen from high above (30 m unless the sidecar says).

A picture with sky in it is open (a street canyon shows only a slice of it: with a vanishing point and
little sky its walls stand on lines through that point); one without sky but with a dominant vanishing point
is a room; a steep downward view (from the vertical vanishing point) is aerial.
"""
from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Literal

import cv2
import numba
import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage

from .. import __version__
from ..errors import LyraAssetsError
from ..images import ConceptImage
from ..motions import FreeSpace
from ..presets import Preset
from ..progress import Progress
from ..settings import validated
from ..trajectory import CameraPath, intrinsics_from_fov, pixel_centres
from ..walkthrough import Walkthrough
from . import open_scene
from .scene_render import OpenScene, render_open

MIN_WALL_DISTANCE = 0.6  # metres; a fitted wall never comes closer to the first camera than this
MAX_TEXTURE_SIDE = 2048
AERIAL_HEIGHT_M = 30.0  # a plausible drone or rooftop view when the sidecar gives no height
AERIAL_PITCH_DEG = 25.0  # a view pitched down at least this much is aerial
SKY_FRACTION = 0.01  # a picture with at least this much sky is open (a street canyon shows a slice of it)
STREET_SKY = 0.1  # an open picture with less sky than this and a vanishing point is a street between walls


class LayoutHints(BaseModel):
    """The sidecar's `[layout]` table: overrides for what the fit would otherwise estimate."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    scene: Literal["auto", "room", "outdoor", "aerial"] = Field(
        "auto", description="force the kind of layout instead of deciding from the picture")
    vanishing_point: tuple[float, float] | None = Field(None, description="pixels (x, y) in the concept image")
    back_wall: tuple[float, float, float, float] | None = Field(
        None, description="room: back-wall rectangle x0, y0, x1, y1 in concept-image pixels")
    horizon_px: float | None = Field(
        None, description="open scenes: concept-image row where the horizon crosses the centre column")
    roll_deg: float = Field(0.0, ge=-45.0, le=45.0, description="with horizon_px: the horizon's tilt")
    camera_height_m: float | None = Field(
        None, gt=0.0, le=10000.0, description="open scenes: camera above the ground (eye height, or 30 m aerial)")
    far_m: float = Field(40.0, gt=1.0, le=10000.0,
                         description="open scenes at eye height: the ground and pop-ups end this far away "
                                     "(scaled with camera height); beyond is the dome")


@dataclass(frozen=True)
class Room:
    """A box in room coordinates q = axes.T @ p (p: first camera's frame); the first camera is at q = 0."""

    axes: np.ndarray  # (3, 3) columns: the room's x (right), y (down), z (depth) in the camera frame
    lo: np.ndarray  # (3,) box minimum in room coordinates (ceiling is lo[1], floor is hi[1])
    hi: np.ndarray  # (3,)

    def clearance(self, points: np.ndarray) -> np.ndarray:
        q = points @ self.axes
        return np.minimum(q - self.lo, self.hi - q).min(axis=1)


@dataclass(frozen=True)
class Atlas:
    """All six face textures in one image, with the per-face mapping from room coordinates to pixels."""

    colour: np.ndarray  # (AH, AW, 3) uint8
    observed: np.ndarray  # (AH, AW) uint8, 1 where the concept image saw the texel
    origin: np.ndarray  # (6, 2) pixel offset of each face's texture in the atlas
    axes: np.ndarray  # (6, 2) int: which room coordinates run along the face's u and v
    start: np.ndarray  # (6, 2) room coordinate at the face texture's u = 0 and v = 0
    density: float  # texels per metre


Renderer = Callable[[np.ndarray, np.ndarray, int, int], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Layout:
    """A fitted layout: how to render it from a camera, its free space, the fit for the manifest, and the
    labelling drawn over the concept image."""

    render: Renderer  # (K, c2w, width, height) -> frame, depth, observed
    space: FreeSpace
    fit: dict[str, Any]
    labelled: np.ndarray  # (h, w, 3) uint8
    room: Room | None = None
    scene: OpenScene | None = None
    # Frames rendered at once. Both renderers are serial kernels (the room's then OpenCV's remap) that release
    # the GIL: a frame keeps one core busy, so frames go side by side. (A parallel kernel would also have to
    # stay out of numba's default threading layer from two threads at once.)
    frames_at_once: int = 1


class LayoutGenerator:
    name = "layout"
    summary = "embedded default: a single-view layout of the picture; no GPU, no weights"
    licence = "none: procedural, no learned weights"
    needs_gpu = False
    takes_prompt = False
    operator_only: tuple[str, ...] = ()
    notice = None
    settings_model = LayoutHints

    def __init__(self, preset: Preset, settings: dict[str, Any], source: str = "settings") -> None:
        self.hints = validated(LayoutHints, settings, source, "[layout]")
        self.preset = preset
        self._fitted: tuple[str, Layout] | None = None

    def survey(self, image: ConceptImage) -> FreeSpace:
        return self._fit(image).space

    def generate(self, image: ConceptImage, path: CameraPath, progress: Progress,
                 memory: Walkthrough | None = None) -> Walkthrough:
        """Render the path through the fitted layout. `memory` (a walkthrough to continue) needs nothing
        here: the layout is one fixed model of the concept image, so a continuation renders the same
        world and a revisited pose the identical frame."""
        started = time.perf_counter()
        layout = self._fit(image)
        n, h, w = len(path), path.height, path.width
        frames = np.empty((n, h, w, 3), np.uint8)
        depth = np.empty((n, h, w), np.float32)
        observed = np.empty((n, h, w), bool)

        def render(i: int) -> None:
            frames[i], depth[i], observed[i] = layout.render(path.K[i], path.c2w[i], w, h)

        with ThreadPoolExecutor(layout.frames_at_once) as pool:
            for done, _ in enumerate(pool.map(render, range(n)), start=1):
                progress("generate", done, n, "rendering the layout")
        info = {"generator": {"name": self.name, "version": __version__, "licence": self.licence,
                              "layout": layout.fit},
                "timings_s": {"generate": round(time.perf_counter() - started, 3)}}
        return Walkthrough(frames, depth, observed, path, image.pixels, info, labelled=layout.labelled)

    # -- fitting --------------------------------------------------------------------------------------

    def _fit(self, image: ConceptImage) -> Layout:
        if self._fitted is None or self._fitted[0] != image.sha256:
            self._fitted = (image.sha256, fit_layout(image.pixels, self.preset, self.hints))
        return self._fitted[1]


def fit_layout(pixels: np.ndarray, preset: Preset, hints: LayoutHints) -> Layout:
    """Decide room / outdoor / aerial for this picture and fit that layout."""
    started = time.perf_counter()
    h, w = pixels.shape[:2]
    hfov, eye = preset.camera.hfov_deg, preset.scene.eye_height_m
    K = intrinsics_from_fov(hfov, w, h)
    segments = detect_segments(pixels)
    vp = (np.array(hints.vanishing_point, float) if hints.vanishing_point is not None
          else find_vanishing_point(segments, w, h))
    case, why = hints.scene, "sidecar"
    reading, street = None, None
    if case in ("auto", "outdoor", "aerial"):
        def read(horizon_vp: np.ndarray | None) -> open_scene.Reading:
            return open_scene.read_picture(pixels, K, segments, horizon_vp, hints.horizon_px, hints.roll_deg,
                                           AERIAL_PITCH_DEG * 1.8 if case == "aerial" else None)

        # The horizon's vanishing point may lie above the frame (a steep view), so search beyond it.
        reading = read(vp if hints.vanishing_point is not None else horizon_vanishing_point(segments, w, h))
        pitch = open_scene.pitch_roll_deg(reading.down)[0]
        if case == "auto" and pitch >= AERIAL_PITCH_DEG and np.mean(reading.labels == open_scene.GROUND) < 0.3:
            # A steep view is mostly ground; lines meeting far outside the frame that leave little ground
            # were not the horizon.
            reading = read(None)
            pitch = open_scene.pitch_roll_deg(reading.down)[0]
        sky = float(np.mean(reading.labels == open_scene.SKY))
        if case == "auto":
            if pitch >= AERIAL_PITCH_DEG:
                case, why = "aerial", f"camera pitched down {pitch:.0f} degrees"
            elif sky >= SKY_FRACTION:
                case, why = "outdoor", f"{100 * sky:.1f}% of the picture is sky"
                if vp is not None and sky < STREET_SKY:
                    street = (vp if hints.vanishing_point is not None
                              else open_scene.street_vanishing_point(segments, reading.down, K, vp))
                    why += " between walls receding to a vanishing point: a street, open above"
            elif vp is not None or hints.back_wall is not None:
                case, why = "room", "no sky, and receding lines meet at a vanishing point"
            else:
                case, why = "outdoor", "no sky and no vanishing point: open ground with things on it"
    if case == "room":
        layout = room_layout(pixels, K, hfov, eye, hints, segments)
    else:
        layout = open_layout(pixels, K, reading, hints, eye, aerial=case == "aerial", street=street)
    layout.fit.update({"case": case, "case_reason": why, "hfov_deg": hfov, "line_segments": int(len(segments)),
                       "fit_s": round(time.perf_counter() - started, 3)})
    return layout


def room_layout(pixels: np.ndarray, K: np.ndarray, hfov: float, eye: float, hints: LayoutHints,
                segments: np.ndarray) -> Layout:
    room, fit = fit_room(pixels, hfov, eye, hints)
    atlas = texture_atlas(room, pixels, K)
    centre_q = np.array([(room.lo[0] + room.hi[0]) / 2, 0.0, (room.lo[2] + room.hi[2]) / 2])
    space = FreeSpace(depth=float(room.hi[2]), centre=room.axes @ centre_q, clearance=room.clearance)
    labelled = pixels.copy()
    x0, y0, x1, y1 = (int(round(c)) for c in fit["back_wall"])
    thick = max(2, pixels.shape[1] // 300)
    cv2.rectangle(labelled, (x0, y0), (x1, y1), (255, 220, 0), thick)
    vx, vy = (int(round(c)) for c in fit["vanishing_point"])
    for cx, cy in ((0, 0), (pixels.shape[1], 0), (0, pixels.shape[0]), (pixels.shape[1], pixels.shape[0])):
        cv2.line(labelled, (vx, vy), (cx, cy), (255, 60, 60), max(1, thick // 2), cv2.LINE_AA)
    return Layout(lambda K_, c2w, w, h: render(room, atlas, K_, c2w, w, h), space, fit, labelled, room=room,
                  frames_at_once=min(os.cpu_count() or 1, 4))  # a frame's temporaries: ~30 MB


def open_layout(pixels: np.ndarray, K: np.ndarray, reading: open_scene.Reading, hints: LayoutHints, eye: float,
                aerial: bool, street: np.ndarray | None = None) -> Layout:
    height = hints.camera_height_m or (AERIAL_HEIGHT_M if aerial else eye)
    far = hints.far_m * height / eye
    scene, fit = open_scene.lift(pixels, K, reading, height, far, street)
    pitch, roll = open_scene.pitch_roll_deg(reading.down)
    probe_w = 160
    probe_h = max(2, round(probe_w * pixels.shape[0] / pixels.shape[1]))
    probe_K = K * np.array([[probe_w / pixels.shape[1]], [probe_h / pixels.shape[0]], [1.0]])
    first_depth = render_open(scene, probe_K, np.eye(4), probe_w, probe_h)[1]
    centre = first_depth[probe_h // 3: 2 * probe_h // 3, probe_w // 3: 2 * probe_w // 3]
    seen = centre[centre > 0] if (centre > 0).any() else first_depth[first_depth > 0]
    depth = float(np.median(seen)) if len(seen) else far / 2
    space = FreeSpace(depth=depth, centre=np.array([0.0, 0.0, depth]),
                      clearance=open_scene.scene_clearance(scene))
    fit.update({"horizon_px": round(float(open_scene.horizon_row(reading.down, K, K[0, 2])), 2),
                "horizon_source": reading.horizon_source, "pitch_deg": round(pitch, 2), "roll_deg": round(roll, 2),
                "down": reading.down.round(6).tolist(), "camera_height_m": height,
                "camera_height_source": "sidecar" if hints.camera_height_m else ("aerial default" if aerial
                                                                                 else "preset eye height"),
                "far_m": round(far, 2), "first_view_median_depth_m": round(depth, 3),
                "street_vanishing_point": None if street is None else np.round(street, 2).tolist(),
                "sky": "dome: depth 0 (unknown) in the walkthrough, so neither fusion nor the collider sees it",
                "unseen_fill": "Telea inpainting at low resolution (ground) or per-elevation colour (dome), "
                               "plus detail continued from random patches of the seen texture"})
    return Layout(lambda K_, c2w, w, h: render_open(scene, K_, c2w, w, h), space, fit,
                  open_scene.overlay(pixels, scene), scene=scene, frames_at_once=min(os.cpu_count() or 1, 4))


def fit_room(pixels: np.ndarray, hfov_deg: float, eye_height: float,
             hints: LayoutHints) -> tuple[Room, dict[str, Any]]:
    h, w = pixels.shape[:2]
    K = intrinsics_from_fov(hfov_deg, w, h)
    segments = detect_segments(pixels)
    if hints.vanishing_point is not None:
        vp, vp_source = np.array(hints.vanishing_point, float), "sidecar"
    else:
        found = find_vanishing_point(segments, w, h)
        vp, vp_source = (found, "detected") if found is not None else (np.array([w / 2, h / 2]), "default")
    vp = np.clip(vp, [0.05 * w, 0.05 * h], [0.95 * w, 0.95 * h])
    if hints.back_wall is not None:
        rect, rect_source = np.array(hints.back_wall, float), "sidecar"
        if not (rect[0] < vp[0] < rect[2] and rect[1] < vp[1] < rect[3]):
            raise LyraAssetsError(
                f"[layout] back_wall {list(hints.back_wall)} must contain the vanishing point {vp.round(1).tolist()}"
            )
    else:
        rect, rect_source = estimate_back_wall(segments, vp, w, h), "estimated" if len(segments) else "default"

    # Room axes: depth through the vanishing point, "down" as close to the camera's down as possible.
    z = np.linalg.solve(K, [vp[0], vp[1], 1.0])
    z /= np.linalg.norm(z)
    y = np.array([0.0, 1.0, 0.0]) - z[1] * z
    y /= np.linalg.norm(y)
    axes = np.stack([np.cross(y, z), y, z], axis=1)

    def room_ray(u: float, v: float) -> np.ndarray:
        return axes.T @ np.linalg.solve(K, [u, v, 1.0])

    bottom = room_ray(vp[0], rect[3])
    depth = eye_height * bottom[2] / bottom[1] if bottom[1] > 1e-6 else 4.0 * eye_height
    depth = max(depth, 2.5 * MIN_WALL_DISTANCE)

    def at_depth(u: float, v: float, axis: int) -> float:
        ray = room_ray(u, v)
        return float(ray[axis] / ray[2] * depth)

    left = min(at_depth(rect[0], vp[1], 0), -MIN_WALL_DISTANCE)
    right = max(at_depth(rect[2], vp[1], 0), MIN_WALL_DISTANCE)
    ceiling = min(at_depth(vp[0], rect[1], 1), -MIN_WALL_DISTANCE)
    behind = -float(np.clip(0.5 * depth, 1.5, 5.0))
    room = Room(axes, np.array([left, ceiling, behind]), np.array([right, eye_height, depth]))
    fit = {"vanishing_point": vp.round(2).tolist(), "vanishing_point_source": vp_source,
           "back_wall": rect.round(2).tolist(), "back_wall_source": rect_source,
           "line_segments": int(len(segments)), "eye_height_m": eye_height, "hfov_deg": hfov_deg,
           "room_axes": axes.round(6).tolist(), "room_min_m": room.lo.round(4).tolist(),
           "room_max_m": room.hi.round(4).tolist(), "unseen_fill": "mirror extension"}
    return room, fit


def detect_segments(pixels: np.ndarray) -> np.ndarray:
    """(M, 4) line segments x0, y0, x1, y1 from OpenCV's LSD detector, short ones dropped."""
    grey = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    scale = 640.0 / max(grey.shape)
    if scale < 1.0:
        grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    else:
        scale = 1.0
    lines = cv2.createLineSegmentDetector().detect(grey)[0]
    if lines is None:
        return np.zeros((0, 4))
    segments = lines.reshape(-1, 4).astype(np.float64) / scale
    length = np.hypot(segments[:, 2] - segments[:, 0], segments[:, 3] - segments[:, 1])
    return segments[length > 0.04 * max(pixels.shape[:2])]


def _receding(segments: np.ndarray) -> np.ndarray:
    """Segments that are neither near-horizontal nor near-vertical: the ones that can recede in depth."""
    angle = np.degrees(np.arctan2(segments[:, 3] - segments[:, 1], segments[:, 2] - segments[:, 0])) % 180
    return segments[(np.abs(angle - 90) > 8) & (np.minimum(angle, 180 - angle) > 8)]


def find_vanishing_point(segments: np.ndarray, width: int, height: int, reach: float = 0.0,
                         lowest: float | None = None) -> np.ndarray | None:
    """The point most receding segments point at, by length-weighted voting over pairwise intersections,
    within the image or up to `reach` image sides outside it (a steep view's horizon is above the frame),
    and no lower than row `lowest` if given."""
    segs = _receding(segments)
    if len(segs) < 4:
        return None
    segs = segs[np.argsort(-np.hypot(segs[:, 2] - segs[:, 0], segs[:, 3] - segs[:, 1]))[:150]]
    p0 = np.c_[segs[:, :2], np.ones(len(segs))]
    p1 = np.c_[segs[:, 2:], np.ones(len(segs))]
    lines = np.cross(p0, p1)
    points = np.cross(lines[:, None], lines[None])[np.triu_indices(len(segs), 1)]
    ok = np.abs(points[:, 2]) > 1e-9
    candidates = points[ok, :2] / points[ok, 2:]
    inside = ((candidates[:, 0] > -reach * width) & (candidates[:, 0] < (1 + reach) * width)
              & (candidates[:, 1] > -reach * height)
              & (candidates[:, 1] < ((1 + reach) * height if lowest is None else lowest)))
    candidates = candidates[inside]
    if len(candidates) == 0:
        return None
    scores = _vp_scores(candidates, segs)
    best = candidates[int(np.argmax(scores))]
    support = _vp_scores(best[None], segs)[0] / np.hypot(segs[:, 2] - segs[:, 0], segs[:, 3] - segs[:, 1]).sum()
    return best if support > 0.25 else None


def horizon_vanishing_point(segments: np.ndarray, width: int, height: int) -> np.ndarray | None:
    """Where receding ground lines meet, for an open scene's horizon: possibly above the frame (a steep
    view), but not far below its centre (there a downward view's verticals meet), and only with the support
    of several lines (two mountain ridges meet at a peak, which is no horizon)."""
    vp = find_vanishing_point(segments, width, height, reach=2.0, lowest=0.75 * height)
    if vp is None:
        return None
    segs = _receding(segments)
    support = segs[_pointing_at(vp[None], segs, 2.0)[0]]
    length = np.hypot(support[:, 2] - support[:, 0], support[:, 3] - support[:, 1]).sum()
    return vp if len(support) >= 5 and length >= height else None


def _pointing_at(candidates: np.ndarray, segs: np.ndarray, tolerance_deg: float) -> np.ndarray:
    """(C, M) bool: segment m's line passes within tolerance_deg of candidate point c (seen from its middle)."""
    mid = (segs[:, :2] + segs[:, 2:]) / 2
    direction = segs[:, 2:] - segs[:, :2]
    length = np.hypot(direction[:, 0], direction[:, 1])
    to_vp = candidates[:, None, :] - mid[None]
    cos = np.abs((to_vp * direction[None]).sum(-1)) / (np.linalg.norm(to_vp, axis=-1) * length + 1e-9)
    return cos > math.cos(math.radians(tolerance_deg))


def _vp_scores(candidates: np.ndarray, segs: np.ndarray, tolerance_deg: float = 2.0) -> np.ndarray:
    """For each candidate point: total length of the segments pointing at it."""
    length = np.hypot(segs[:, 2] - segs[:, 0], segs[:, 3] - segs[:, 1])
    return (_pointing_at(candidates, segs, tolerance_deg) * length).sum(axis=1)


def estimate_back_wall(segments: np.ndarray, vp: np.ndarray, width: int, height: int) -> np.ndarray:
    """Back-wall rectangle x0, y0, x1, y1: where the receding lines towards the vanishing point stop.

    Each segment pointing at the vanishing point ends, on its inner side, at the back wall's edge. Ends in
    the left, right, top and bottom wedges around the vanishing point bound the matching edge; a low
    percentile keeps lines that fade out early (fog, low contrast) from pushing the wall outwards. Lines on
    the floor run all the way to the back wall more often than wall lines do, so where several end on the
    bottom edge, the outermost of those ends (plus 10 %) set the side edges.
    """
    segs = _receding(segments)
    segs = segs[_pointing_at(vp[None], segs, 3.0)[0]] if len(segs) else segs
    reach = np.array([0.18 * width, 0.18 * height, 0.18 * width, 0.18 * height])  # left, top, right, bottom
    if len(segs):
        first_nearer = (np.linalg.norm(segs[:, :2] - vp, axis=1) < np.linalg.norm(segs[:, 2:] - vp, axis=1))
        offset = np.where(first_nearer[:, None], segs[:, :2], segs[:, 2:]) - vp
        sideways = np.abs(offset[:, 0]) / width > np.abs(offset[:, 1]) / height
        wedges = [sideways & (offset[:, 0] < 0), ~sideways & (offset[:, 1] < 0),
                  sideways & (offset[:, 0] > 0), ~sideways & (offset[:, 1] > 0)]
        for side, wedge in enumerate(wedges):
            if wedge.sum() >= 2:
                reach[side] = np.percentile(np.abs(offset[wedge, side % 2]), 10)
        floor = wedges[3] & (np.abs(offset[:, 1] - reach[3]) < 0.15 * reach[3])  # ends on the bottom edge
        if floor.sum() >= 2:
            reach[0] = 1.1 * max(-offset[floor, 0].min(), 0.0)
            reach[2] = 1.1 * max(offset[floor, 0].max(), 0.0)
    reach = np.clip(reach, 0.04 * np.array([width, height] * 2), 0.45 * np.array([width, height] * 2))
    x0, y0 = np.maximum(vp - reach[:2], 1.0)
    x1, y1 = np.minimum(vp + reach[2:], [width - 1.0, height - 1.0])
    return np.array([x0, y0, x1, y1])


# -- texturing ------------------------------------------------------------------------------------------

# Face f = axis * 2 + (ray direction > 0) lies on the plane q[axis] = lo or hi. Its texture runs along the
# other two room axes, chosen so that images stay upright on walls.
_FACE_AXES = np.array([[2, 1], [2, 1], [0, 2], [0, 2], [0, 1], [0, 1]])


def texture_atlas(room: Room, pixels: np.ndarray, K: np.ndarray) -> Atlas:
    """Project every face's texels into the concept image; fill what it never saw by mirror extension."""
    h_in, w_in = pixels.shape[:2]
    # Match the image's resolution about a third of the way into the room, within the texture budget.
    density = min(K[0, 0] / max(1.0, 0.35 * (room.hi[2] - room.lo[2])), MAX_TEXTURE_SIDE / (room.hi - room.lo).max())

    def paint(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cam = points @ room.axes.T
        with np.errstate(divide="ignore", invalid="ignore"):
            px = K[0, 0] * cam[..., 0] / cam[..., 2] + K[0, 2]
            py = K[1, 1] * cam[..., 1] / cam[..., 2] + K[1, 2]
        inside = (cam[..., 2] > 1e-6) & (px >= 0) & (px <= w_in) & (py >= 0) & (py <= h_in)
        face = cv2.remap(pixels, np.where(inside, px - 0.5, 0).astype(np.float32),
                         np.where(inside, py - 0.5, 0).astype(np.float32), cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REFLECT)
        return mirror_fill(face, inside), inside

    return build_atlas(room, density, paint)


def build_atlas(room: Room, density: float,
                paint: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]) -> Atlas:
    """Pack the six faces into one atlas; `paint` colours a face from its texel centres (room coordinates)
    and says which texels it saw."""
    extent = room.hi - room.lo
    sizes = [tuple(int(math.ceil(extent[a] * density)) + 1 for a in _FACE_AXES[f]) for f in range(6)]
    pad = 2  # texels of clamped border around each face so bilinear sampling never mixes faces
    origin = np.zeros((6, 2), int)
    x = 0
    for f, (su, _) in enumerate(sizes):  # one row of faces: six faces pack fine side by side
        origin[f] = (x + pad, pad)
        x += su + 2 * pad
    colour = np.zeros((max(sv for _, sv in sizes) + 2 * pad, x, 3), np.uint8)
    seen = np.zeros(colour.shape[:2], np.uint8)
    start = np.stack([room.lo[_FACE_AXES[f]] for f in range(6)])

    def paint_face(f: int) -> tuple[np.ndarray, np.ndarray]:
        su, sv = sizes[f]
        axis, (ua, va) = f // 2, _FACE_AXES[f]
        u, v = pixel_centres(su, sv)
        q = np.zeros((sv, su, 3))
        q[..., axis] = room.hi[axis] if f % 2 else room.lo[axis]
        q[..., ua] = start[f, 0] + u / density
        q[..., va] = start[f, 1] + v / density
        return paint(q)

    # Two faces paint at a time (their remapping and distance transforms release the GIL): a face's
    # float64 temporaries run to 100 MB and more at the largest face size.
    with ThreadPoolExecutor(2) as pool:
        painted = list(pool.map(paint_face, range(6)))
    for f, ((su, sv), (face, inside)) in enumerate(zip(sizes, painted)):
        ox, oy = origin[f]
        colour[oy - pad: oy + sv + pad, ox - pad: ox + su + pad] = cv2.copyMakeBorder(
            face, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        seen[oy: oy + sv, ox: ox + su] = inside
    return Atlas(colour, seen, origin, _FACE_AXES.copy(), start, density)


def mirror_fill(texture: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Fill unknown texels with the known texture reflected about the nearest known texel.

    For an unknown texel p whose nearest known texel is q, the colour comes from q + (q - p), snapped to
    the nearest known texel; patterns continue across the boundary instead of smearing into streaks.
    """
    if known.all():
        return texture
    if not known.any():
        return np.full_like(texture, 128)
    _, (ny, nx) = ndimage.distance_transform_edt(~known, return_indices=True)
    rows, cols = np.indices(known.shape)
    my = np.clip(2 * ny - rows, 0, known.shape[0] - 1)
    mx = np.clip(2 * nx - cols, 0, known.shape[1] - 1)
    sy, sx = ny[my, mx], nx[my, mx]  # reflected point, snapped into the known region
    filled = texture.copy()
    filled[~known] = texture[sy[~known], sx[~known]]
    return filled


# -- rendering -------------------------------------------------------------------------------------------


def render(room: Room, atlas: Atlas, K: np.ndarray, c2w: np.ndarray, width: int,
           height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB, exact depth (metres along the camera's z) and observed mask of the room from one camera."""
    f32 = np.float32
    depth, map_x, map_y = _room_rays(
        (room.axes.T @ c2w[:3, :3]).astype(f32), (room.axes.T @ c2w[:3, 3]).astype(f32), room.lo.astype(f32),
        room.hi.astype(f32), K.astype(f32), width, height, f32(atlas.density), atlas.origin.astype(f32) - f32(0.5))
    frame = cv2.remap(atlas.colour, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    observed = cv2.remap(atlas.observed, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
    return frame, depth, observed.astype(bool)


@numba.njit(cache=True, nogil=True)  # serial: frames render in threads (Layout.frames_at_once)
def _room_rays(to_room, origin, lo, hi, K, width, height, density, offset):
    """Each pixel centre's ray from the camera (rotation to_room and origin in room coordinates) to the
    room's box: (depth, atlas x, atlas y), float32 (H, W). Along a ray with camera depth 1, the exit
    parameter is the depth; the wall it leaves through gives the face, whose texture axes (_FACE_AXES) give
    the atlas position (offset: a face texture's texel-centre origin in the atlas)."""
    depth = np.empty((height, width), np.float32)
    map_x = np.empty((height, width), np.float32)
    map_y = np.empty((height, width), np.float32)
    half = np.float32(0.5)
    for row in range(height):
        y = (np.float32(row) + half - K[1, 2]) / K[1, 1]
        for col in range(width):
            x = (np.float32(col) + half - K[0, 2]) / K[0, 0]
            dx = to_room[0, 0] * x + to_room[0, 1] * y + to_room[0, 2]
            dy = to_room[1, 0] * x + to_room[1, 1] * y + to_room[1, 2]
            dz = to_room[2, 0] * x + to_room[2, 1] * y + to_room[2, 2]
            tx, ty = _exit(dx, lo[0], hi[0], origin[0]), _exit(dy, lo[1], hi[1], origin[1])
            tz = _exit(dz, lo[2], hi[2], origin[2])
            exit = min(tx, ty, tz)
            hx, hy, hz = origin[0] + exit * dx - lo[0], origin[1] + exit * dy - lo[1], origin[2] + exit * dz - lo[2]
            if tx == exit:  # faces 0/1: the side walls, textured along (z, y)
                face, u, v = (1 if dx > 0 else 0), hz, hy
            elif ty == exit:  # faces 2/3: ceiling and floor, along (x, z)
                face, u, v = (3 if dy > 0 else 2), hx, hz
            else:  # faces 4/5: back and front, along (x, y)
                face, u, v = (5 if dz > 0 else 4), hx, hy
            depth[row, col] = exit
            map_x[row, col] = u * density + offset[face, 0]
            map_y[row, col] = v * density + offset[face, 1]
    return depth, map_x, map_y


@numba.njit(cache=True, inline="always")
def _exit(d, lo, hi, origin):
    """Where a ray (direction d, from origin) leaves [lo, hi] along one axis; inf if it never reaches either
    end ahead (parallel, or behind the camera)."""
    t = ((hi if d > 0 else lo) - origin) / d if d != 0 else np.float32(np.inf)
    return t if t >= 0 else np.float32(np.inf)
