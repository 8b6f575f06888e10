"""Single-view layout of an open scene: ground plane, things standing on it, and the sky.

The classical pipeline of geometric context (Hoiem et al. 2005, "Automatic Photo Pop-up"), without learned
weights:

1. Geometry of the camera. The world's down direction comes from the vertical vanishing point of the
   near-vertical line segments (it gives pitch and roll at once); failing that, the horizon is the row of
   the dominant vanishing point, or is bounded by the sky (which lies above it) and the ground (below it).
2. Labels. The picture is cut into SLIC superpixels. Sky: smooth, blue or pale regions reached from the
   top edge. Ground: regions below the horizon, reached from the bottom edge through neighbours of similar
   colour, without vertical line support. Everything else stands up ("vertical").
3. Lifting. The ground is the plane `camera height` below the camera. Each connected vertical region
   stands where it touches the ground (its depth in each column is the ground's at its foot), as a folded
   surface cut wherever that depth jumps, so what is behind can show. Vertical regions whose foot is
   beyond the far limit, and the sky, form the dome: no depth, no geometry.
4. Unseen parts. The ground's texture outside the picture and behind the pop-ups, and the dome's, are
   synthesised: smooth colour by inpainting (Telea) at low resolution, or per elevation for the sky, plus
   fine detail continued with patches of the seen texture (no mirror copies).
"""
from __future__ import annotations

import math
import warnings
from collections import deque
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.color import rgb2lab
from skimage.segmentation import find_boundaries, slic

from ..motions import Clearance
from ..trajectory import pixel_centres
from .scene_render import FAR_OWNER, GROUND_OWNER, UNSEEN_OWNER, OpenScene

SKY, GROUND, VERTICAL = 0, 1, 2
WORK_WIDTH = 400  # labelling resolution: superpixels of ~20 px here are plenty for scene layout
MESH_STEP = 3  # pop-up mesh spacing in working pixels; the alpha test keeps outlines at full sharpness
DEPTH_CUT = 1.3  # a pop-up is cut where its depth changes by more than this factor between columns
GROUND_TEXELS = 1024  # ground texture side
DOME_SIZE = (256, 512)  # equirectangular dome texture (rows, columns)
WALLED_SHARE = 0.6  # walled in, a dome row whose seen texels are more than this share standing things shows them


@dataclass(frozen=True)
class Reading:
    """What the picture says, before lifting: the down direction, labels and their sources."""

    down: np.ndarray  # (3,) unit, in the first camera's frame
    horizon_source: str
    labels: np.ndarray  # (h_work, w_work) uint8: SKY, GROUND, VERTICAL
    scale: float  # concept pixels per working pixel


# -- 1. camera geometry ----------------------------------------------------------------------------------


def _towards(segments: np.ndarray, point: np.ndarray, tolerance_deg: float) -> np.ndarray:
    """Which segments' lines pass within tolerance_deg of a homogeneous image point (seen from their
    middle); the point may be at infinity (a direction)."""
    mid = (segments[:, :2] + segments[:, 2:]) / 2
    to_point = point[:2][None] - mid * point[2]
    direction = segments[:, 2:] - segments[:, :2]
    cos = np.abs((to_point * direction).sum(1))
    cos /= np.linalg.norm(to_point, axis=1) * np.linalg.norm(direction, axis=1) + 1e-12
    return cos > math.cos(math.radians(tolerance_deg))


def _not_receding_to(segments: np.ndarray, vanishing_point: np.ndarray | None) -> np.ndarray:
    """Segments that do not point at the dominant (horizontal) vanishing point: below it, a receding line
    straight ahead looks as vertical as a post."""
    if vanishing_point is None or not len(segments):
        return segments
    return segments[~_towards(segments, np.r_[vanishing_point, 1.0], 1.5)]


def down_from_verticals(segments: np.ndarray, K: np.ndarray, height: int,
                        vanishing_point: np.ndarray | None = None, may_look_up: bool = True) -> np.ndarray | None:
    """World down in the camera frame from the vertical vanishing point of steep segments, or None.

    Candidates are the pairwise meeting points of the longest steep segments, in homogeneous coordinates
    (a level camera's vertical point at infinity is no special case); the one most segment length points
    at wins (RANSAC-style: receding roads can be steep too) and is refined by least squares over its
    supporters. Without sky in the picture, a camera looking steeply up is not believed: lines meeting
    above the frame are then receding ground lines of a downward view. A prior favours level, unrolled
    views: a few stray lines must not tilt the world."""
    segments = _not_receding_to(segments, vanishing_point)
    if not len(segments):
        return None
    dx, dy = segments[:, 2] - segments[:, 0], segments[:, 3] - segments[:, 1]
    length = np.hypot(dx, dy)
    steep = np.abs(dx) < np.tan(np.radians(30)) * np.abs(dy)
    segs, length = segments[steep], length[steep]
    if len(segs) < 4 or length.sum() < 0.5 * height:
        return None
    lines = np.cross(np.c_[segs[:, :2], np.ones(len(segs))], np.c_[segs[:, 2:], np.ones(len(segs))])
    lines /= np.hypot(lines[:, 0], lines[:, 1])[:, None]
    longest = np.argsort(-length)[:60]
    i, j = np.triu_indices(len(longest), 1)
    meets = np.cross(lines[longest[i]], lines[longest[j]])
    downs = meets @ np.linalg.inv(K).T
    downs = downs / np.linalg.norm(downs, axis=1, keepdims=True) * np.where(downs[:, 1:2] < 0, -1, 1)
    if not may_look_up:
        downs = downs[downs[:, 2] > -math.sin(math.radians(15))]
    if not len(downs):
        return None
    support = np.array([(length * _towards(segs, K @ d, 2.0)).sum() for d in downs])
    # Most views are level, and rolled views rarer still.
    pitch, roll = np.degrees(np.arcsin(np.clip(downs[:, 2], -1, 1))), np.degrees(np.arctan2(-downs[:, 0], downs[:, 1]))
    level = 1.0 / ((1.0 + (pitch / 60.0) ** 2) * (1.0 + (roll / 10.0) ** 2))
    d = downs[int(np.argmax(support * level))]
    for _ in range(2):  # refit on the segments that agree
        keep = _towards(segs, K @ d, 2.0)
        if keep.sum() < 5 or length[keep].sum() < max(0.5 * height, 0.35 * length.sum()):
            return None
        A = lines[keep] @ K
        d = np.linalg.eigh((A * length[keep, None]).T @ A)[1][:, 0]
        d = d / np.linalg.norm(d) * (1 if d[1] > 0 else -1)
    return d


def through(down: np.ndarray | None, vanishing_point: np.ndarray | None, K: np.ndarray,
            tolerance_deg: float = 5.0) -> np.ndarray | None:
    """`down` turned (least, about the horizontal axis) so that the horizon passes through the vanishing
    point of receding ground lines; None without both, or if they disagree by more than tolerance_deg.
    Receding lines meet at a point on the horizon itself, while the vertical vanishing point lies far off
    and a fraction of a degree of error in short posts moves the horizon by pixels; the verticals still
    give the roll."""
    if down is None or vanishing_point is None:
        return None
    ray = np.linalg.solve(K, [vanishing_point[0], vanishing_point[1], 1.0])
    ray /= np.linalg.norm(ray)
    off = float(down @ ray)
    if abs(off) > math.sin(math.radians(tolerance_deg)):
        return None
    turned = down - off * ray
    return turned / np.linalg.norm(turned)


def down_from_horizon(row: float, K: np.ndarray) -> np.ndarray:
    """Down for a camera without roll whose horizon crosses the image centre column at `row`."""
    d = np.array([0.0, 1.0, (K[1, 2] - row) / K[1, 1]])
    return d / np.linalg.norm(d)


def horizon_row(down: np.ndarray, K: np.ndarray, u: np.ndarray | float) -> np.ndarray | float:
    """Row of the horizon at image column(s) u: where rays are perpendicular to down."""
    return K[1, 2] - K[1, 1] * (down[0] * (np.asarray(u) - K[0, 2]) / K[0, 0] + down[2]) / down[1]


def pitch_roll_deg(down: np.ndarray) -> tuple[float, float]:
    """Pitch (positive: looking down) and roll (positive: the horizon falls to the right)."""
    return (math.degrees(math.asin(float(np.clip(down[2], -1, 1)))),
            math.degrees(math.atan2(-float(down[0]), float(down[1]))))


# -- 2. labels -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Superpixels:
    segments: np.ndarray  # (h, w) int label image
    lab: np.ndarray  # (n, 3) mean CIELAB colour
    texture: np.ndarray  # (n,) mean gradient magnitude inside the segment (its boundary left out)
    rows: np.ndarray  # (n, 3) min, mean, max row
    cols: np.ndarray  # (n,) mean column
    area: np.ndarray  # (n,)
    neighbours: list[np.ndarray]


def superpixels(small: np.ndarray) -> Superpixels:
    seg = slic(small, n_segments=300, compactness=12, start_label=0, channel_axis=-1)
    n = int(seg.max()) + 1
    flat = seg.ravel()
    area = np.bincount(flat, minlength=n).astype(float)
    lab = rgb2lab(small).reshape(-1, 3)
    mean_lab = np.stack([np.bincount(flat, lab[:, k], n) for k in range(3)], 1) / area[:, None]
    grey = cv2.GaussianBlur(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255, (0, 0), 1.0)
    grad = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)).ravel()
    inner = ~find_boundaries(seg, mode="inner").ravel()
    texture = np.bincount(flat[inner], grad[inner], n) / np.maximum(np.bincount(flat[inner], minlength=n), 1)
    rows, cols = np.indices(seg.shape)
    row_mean = np.bincount(flat, rows.ravel(), n) / area
    row_min = ndimage.minimum(rows, seg, np.arange(n))
    row_max = ndimage.maximum(rows, seg, np.arange(n))
    col_mean = np.bincount(flat, cols.ravel(), n) / area
    pairs = np.concatenate([np.c_[seg[:, :-1].ravel(), seg[:, 1:].ravel()], np.c_[seg[:-1].ravel(), seg[1:].ravel()]])
    pairs = np.unique(np.sort(pairs[pairs[:, 0] != pairs[:, 1]], axis=1), axis=0)
    neighbours = [np.concatenate([pairs[pairs[:, 0] == i, 1], pairs[pairs[:, 1] == i, 0]]) for i in range(n)]
    return Superpixels(seg, mean_lab, texture, np.c_[row_min, row_mean, row_max], col_mean, area, neighbours)


def _grow(sp: Superpixels, seeds: np.ndarray, allowed: np.ndarray, step_delta_e: float) -> np.ndarray:
    """Region growing over neighbouring superpixels of similar colour, from the seeds, within `allowed`."""
    inside = np.zeros(len(sp.area), bool)
    queue = deque(int(s) for s in np.flatnonzero(seeds & allowed))
    inside[list(queue)] = True
    while queue:
        i = queue.popleft()
        for j in sp.neighbours[i]:
            if not inside[j] and allowed[j] and np.linalg.norm(sp.lab[i] - sp.lab[j]) < step_delta_e:
                inside[j] = True
                queue.append(int(j))
    return inside


def sky_segments(sp: Superpixels, line_pixels: np.ndarray) -> np.ndarray:
    """Smooth, line-free, blue or pale grey superpixels connected to the top edge through similar ones.
    (Cream and beige are walls and ceilings far more often than skies.)"""
    L, a, b = sp.lab.T
    smooth = sp.texture < max(0.02, 0.5 * np.median(sp.texture))
    # Lines along a superpixel's outline are its edges (the horizon itself is one); only lines across its
    # inside are structure.
    inside = ~find_boundaries(sp.segments, mode="thick")
    lines = np.bincount(sp.segments.ravel(), (line_pixels.astype(bool) & inside).ravel().astype(float),
                        len(sp.area)) / sp.area
    sky_colour = ((b < -6) & (L > 10)) | ((L > 65) & (np.hypot(a, b) < 12) & (b < 6))
    top = sp.rows[:, 0] == 0
    return _grow(sp, top, smooth & sky_colour & (lines < 0.02), 8.0)


def ground_segments(sp: Superpixels, horizon: np.ndarray, sky: np.ndarray, line_support: np.ndarray,
                    height: int) -> np.ndarray:
    """Superpixels wholly below the horizon, reached from the bottom edge through similar colours, with
    little vertical line support (walls and posts carry vertical lines; ground does not)."""
    below = (sp.rows[:, 0] >= horizon[np.clip(sp.cols.round().astype(int), 0, len(horizon) - 1)]) & ~sky
    flat = below & (line_support < 0.15)
    seeds = flat & (sp.rows[:, 2] >= height - 1)
    if not seeds.any():
        seeds = flat & (sp.rows[:, 1] > np.percentile(sp.rows[flat, 1], 80)) if flat.any() else seeds
    if not seeds.any():
        return seeds
    grown = _grow(sp, seeds, flat, 12.0)
    seed_lab = sp.lab[seeds]
    far_from_seeds = np.min(np.linalg.norm(sp.lab[:, None] - seed_lab[None], axis=-1), axis=1) > 30.0
    grown &= ~far_from_seeds
    # Beyond a shadow or through an arch the same ground goes on, cut off from the bottom edge: regions of
    # one material with ground already found (within `same` delta E) grow from there.
    same = 6.0
    match = np.min(np.linalg.norm(sp.lab[:, None] - sp.lab[grown][None], axis=-1), axis=1) < same
    return grown | _grow(sp, flat & match, flat, same)


def vertical_segments(segments: np.ndarray, down: np.ndarray, K: np.ndarray,
                      vanishing_point: np.ndarray | None) -> np.ndarray:
    """The segments pointing at the vertical vanishing point (and not at the horizon's)."""
    segments = _not_receding_to(segments, vanishing_point)
    return segments[_towards(segments, K @ down, 4.0)] if len(segments) else segments


def vertical_line_support(segments: np.ndarray, down: np.ndarray, K: np.ndarray, sp: Superpixels,
                          scale: float, vanishing_point: np.ndarray | None) -> np.ndarray:
    """Per superpixel: the fraction of its pixels on a segment pointing at the vertical vanishing point."""
    mask = np.zeros(sp.segments.shape, np.uint8)
    for x0, y0, x1, y1 in vertical_segments(segments, down, K, vanishing_point):
        cv2.line(mask, (int(x0 / scale), int(y0 / scale)), (int(x1 / scale), int(y1 / scale)), 1, 2)
    n = len(sp.area)
    return np.bincount(sp.segments.ravel(), mask.ravel().astype(float), n) / sp.area


def vertical_sides(region: np.ndarray, ground: np.ndarray, vertical_point: np.ndarray,
                   share: float = 0.4) -> list[tuple[float, float, float, float]]:
    """The region's left and right outlines where they run straight towards the vertical vanishing point
    (homogeneous, working pixels) over `share` of its height, beside other ground for a third of that
    (a ground boundary that is vertical in the picture, whether or not the line detector found it), as
    segments x0, y0, x1, y1. Outlines along the frame's edge are the frame's, not the region's."""
    h, w = region.shape
    rows = np.flatnonzero(region.any(axis=1))
    if len(rows) < max(8, 0.08 * h):
        return []
    height = rows[-1] - rows[0] + 1
    out = []
    for side in (-1, 1):
        cols = (np.argmax(region[rows], axis=1) if side < 0
                else w - 1 - np.argmax(region[rows, ::-1], axis=1)).astype(float)
        inner = (cols > 0) & (cols < w - 1)
        if inner.sum() < share * height:
            continue
        r, c = rows[inner].astype(float) + 0.5, cols[inner] + 0.5 * (1 + side)
        # Towards the vertical vanishing point from the outline's middle: the run's expected slope.
        to_point = vertical_point[:2] - np.array([np.median(c), np.median(r)]) * vertical_point[2]
        if abs(to_point[1]) < 1e-9:
            continue
        slope = to_point[0] / to_point[1]
        offset = np.median(c - slope * r)
        fits = np.abs(c - slope * r - offset) <= 1.5
        if fits.sum() < share * height:
            continue
        r, c = r[fits], c[fits]
        beside = ground[r.astype(int), np.clip((c + 2 * side).astype(int), 0, w - 1)]
        if beside.mean() >= 1 / 3:
            out.append((c[0], r[0] - 0.5, c[-1], r[-1] + 0.5))
    return out


def standing_on_ground(sp: Superpixels, ground: np.ndarray, verticals: np.ndarray, horizon: np.ndarray,
                       vertical_point: np.ndarray, step_delta_e: float = 8.0) -> np.ndarray:
    """Superpixels of `ground` that belong to something standing, by the generic-viewpoint assumption: a
    straight edge pointing at the vertical vanishing point is a vertical edge in the world, not a ground
    line that happens to point at the camera's foot. A ground material (a region of neighbours within
    step_delta_e) along such an edge that ends where the edge ends is the face of an object (a plinth, a
    hedge); one that goes on above it is the ground behind. Besides the detected segments, the outlines of
    near materials count where they run straight to the vertical vanishing point (vertical_sides). The main
    ground (the material reaching farthest), materials of its colour and any material reaching the horizon
    stay ground. `verticals` at working scale."""
    n = len(sp.area)
    material = np.full(n, -1)
    for start in np.flatnonzero(ground):
        if material[start] < 0:
            seed = np.zeros(n, bool)
            seed[start] = True
            material[_grow(sp, seed, ground & (material < 0), step_delta_e)] = start
    pixel_material = material[sp.segments]
    h, w = pixel_material.shape
    area = np.bincount(material[ground], sp.area[ground], n)
    rows = np.arange(h)
    standing = set()
    # The main ground reaches farthest towards the horizon (the largest of those that reach as far).
    top_row = np.full(n, h, float)
    np.minimum.at(top_row, material[ground], sp.rows[ground, 0])
    main = int(np.lexsort((-area, top_row))[0])
    # Outlines of near materials, reaching the lower half between the horizon and the frame's bottom (a far
    # patch of floor between posts is outlined by the posts).
    bottom_row = np.full(n, -1.0)
    np.maximum.at(bottom_row, material[ground], sp.rows[ground, 2])
    near = bottom_row >= (horizon.mean() + h) / 2
    runs = [run for m in np.flatnonzero(near) if m != main
            for run in vertical_sides(pixel_material == m, pixel_material >= 0, vertical_point)]
    for x0, y0, x1, y1 in [*verticals, *runs]:
        if y0 > y1:
            x0, y0, x1, y1 = x1, y1, x0, y0
        t = np.linspace(0.0, 1.0, max(2, int(y1 - y0)))
        xs, ys = x0 + t * (x1 - x0), np.clip((y0 + t * (y1 - y0)).astype(int), 0, h - 1)
        sides = [pixel_material[ys, np.clip((xs + dx).astype(int), 0, w - 1)] for dx in (-2.5, 2.5)]
        col = int(np.clip(x0, 0, w - 1))
        window = pixel_material[:, max(0, col - 4): col + 5]
        for side in sides:
            if (side >= 0).mean() > 0.6:
                m = int(np.bincount(side[side >= 0]).argmax())
                if abs(rows[(window == m).any(axis=1)].min() - y0) <= 0.15 * (y1 - y0) + 2:
                    standing.add(m)  # it ends where the edge ends: the edge's object, not ground behind it
    out = np.zeros(n, bool)
    main_lab = (sp.lab[material == main] * sp.area[material == main, None]).sum(0) / area[main]
    for m in standing - {main}:
        region = material == m
        lab = (sp.lab[region] * sp.area[region, None]).sum(0) / area[m]
        if np.linalg.norm(lab - main_lab) < step_delta_e:
            continue  # the main ground itself, seen between the legs of something standing on it
        reach = (horizon[np.clip(sp.cols[region].round().astype(int), 0, w - 1)] - sp.rows[region, 0]).max()
        if reach < -0.02 * h:  # its top stays clear of the horizon
            out |= region
    return out


def read_picture(pixels: np.ndarray, K: np.ndarray, segments: np.ndarray, vanishing_point: np.ndarray | None,
                 horizon_hint: float | None, roll_hint_deg: float | None,
                 pitch_default_deg: float | None) -> Reading:
    """Down direction and sky / ground / vertical labels of the concept image."""
    h, w = pixels.shape[:2]
    scale = max(1.0, w / WORK_WIDTH)
    small = cv2.resize(pixels, (round(w / scale), round(h / scale)), interpolation=cv2.INTER_AREA)
    sp = superpixels(small)
    line_pixels = np.zeros(small.shape[:2], np.uint8)
    for x0, y0, x1, y1 in segments / scale:
        cv2.line(line_pixels, (int(x0), int(y0)), (int(x1), int(y1)), 1, 1)
    sky = sky_segments(sp, line_pixels)
    sky_pixels = sky[sp.segments]

    rows, cols = np.nonzero(sky_pixels)

    def sky_below(down: np.ndarray) -> float:
        """Share of the sky that a horizon for `down` would put below itself (by more than two pixels of
        superpixel slop)."""
        slop = 2 * scale
        return float(np.mean(rows * scale > horizon_row(down, K, (cols + 0.5) * scale) + slop)) if len(rows) else 0.0

    if horizon_hint is not None:
        down, source = down_from_horizon(horizon_hint, K), "sidecar"
        if roll_hint_deg:
            r = math.radians(roll_hint_deg)
            down = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]]) @ down
    else:
        vertical = down_from_verticals(segments, K, h, vanishing_point, may_look_up=bool(sky_pixels.mean() >= 0.03))
        candidates = [(through(vertical, vanishing_point, K), "vertical and horizon vanishing points"),
                      (vertical, "vertical vanishing point"),
                      (None if vanishing_point is None else down_from_horizon(float(vanishing_point[1]), K),
                       "vanishing point")]
        if pitch_default_deg is not None:
            p = math.radians(pitch_default_deg)
            candidates.append((np.array([0.0, math.cos(p), math.sin(p)]), "default pitch"))
        # Lines can mislead (a tapered statue, ridges); a horizon with sky below it is wrong.
        found = [(d, why) for d, why in candidates if d is not None and sky_below(d) < 0.01]
        if found:
            down, source = found[0]
        else:
            row, source = K[1, 2], "level camera"
            if len(rows):  # the sky lies above the horizon: the horizon is at or below its lowest rows
                lowest = np.percentile(rows, 99) * scale
                if lowest > row:
                    row, source = lowest, "sky boundary"
            down = down_from_horizon(row, K)

    cols_work = (np.arange(small.shape[1]) + 0.5) * scale
    horizon = (horizon_row(down, K, cols_work) / scale).astype(float)
    support = vertical_line_support(segments, down, K, sp, scale, vanishing_point)
    # Sky below the horizon is a reflection or a mistake; either way not the dome.
    sky &= sp.rows[:, 1] < horizon[np.clip(sp.cols.round().astype(int), 0, len(horizon) - 1)]
    ground = ground_segments(sp, horizon, sky, support, small.shape[0])
    ground &= ~standing_on_ground(sp, ground, vertical_segments(segments, down, K, vanishing_point) / scale, horizon,
                                 np.diag([1 / scale, 1 / scale, 1.0]) @ K @ down)
    labels = np.where(sky, SKY, np.where(ground, GROUND, VERTICAL)).astype(np.uint8)[sp.segments]
    return Reading(down, source, refine_sky(labels, rgb2lab(small), horizon), scale)


def refine_sky(labels: np.ndarray, lab: np.ndarray, horizon: np.ndarray, delta_e: float = 6.0,
               step_delta_e: float = 3.0) -> np.ndarray:
    """Pixels above the horizon that superpixels left out of the sky (slivers beside roofs and posts, the
    band above the horizon) join it when their colour is within delta_e of the sky's colour on their row,
    or changes by less than step_delta_e from the sky pixel above them (the sky brightens downwards)."""
    sky = labels == SKY
    if not sky.any():
        return labels
    counts = sky.sum(axis=1)
    have = np.flatnonzero(counts)
    row_mean = (lab * sky[..., None]).sum(axis=1) / np.maximum(counts, 1)[:, None]
    row_mean = np.stack([np.interp(np.arange(len(lab)), have, row_mean[have, k]) for k in range(3)], 1)
    rows = np.arange(labels.shape[0])[:, None]
    open_air = (rows < horizon[None]) & (labels == VERTICAL)
    sky |= open_air & (np.linalg.norm(lab - row_mean[:, None], axis=-1) < delta_e)
    step = np.linalg.norm(lab[1:] - lab[:-1], axis=-1) < step_delta_e
    for r in range(1, len(lab)):
        sky[r] |= open_air[r] & sky[r - 1] & step[r - 1]
    return np.where(sky, SKY, labels).astype(np.uint8)


# -- 3. lifting ------------------------------------------------------------------------------------------


def ground_frame(down: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal right and forward axes that go with `down` (forward: the first camera's view, levelled)."""
    forward = np.array([0.0, 0.0, 1.0]) - down[2] * down
    forward /= np.linalg.norm(forward)
    return np.cross(down, forward), forward


@dataclass(frozen=True)
class Popup:
    mask: np.ndarray  # (h_work, w_work) bool
    cols: np.ndarray  # working columns it spans
    reach: np.ndarray  # horizontal distance of its foot from the first camera, per column of `cols`
    grounded: np.ndarray  # per column of `cols`: whether the picture shows its foot on the ground


def street_vanishing_point(segments: np.ndarray, down: np.ndarray, K: np.ndarray,
                           vanishing_point: np.ndarray) -> np.ndarray:
    """A street's vanishing point on the horizon: where the ground lines (receding segments wholly below
    the horizon: kerbs, the walls' feet) cross it, the length-weighted median. The meeting point of all
    segments need not lie on the horizon (lines on the facades, cast shadows); the street's does. With
    fewer than three ground lines, `vanishing_point` moved onto the horizon."""
    horizon = np.linalg.inv(K).T @ down  # the image line of directions perpendicular to down
    dx, dy = segments[:, 2] - segments[:, 0], segments[:, 3] - segments[:, 1]
    receding = (np.abs(dy) > np.tan(np.radians(8)) * np.abs(dx)) & (np.abs(dx) > np.tan(np.radians(8)) * np.abs(dy))
    below = np.minimum(segments[:, 1], segments[:, 3]) > horizon_row(down, K, (segments[:, 0] + segments[:, 2]) / 2)
    ground = segments[receding & below]
    if len(ground) >= 3:
        ones = np.ones(len(ground))
        meets = np.cross(np.cross(np.c_[ground[:, :2], ones], np.c_[ground[:, 2:], ones]), horizon)
        x = meets[:, 0] / meets[:, 2]
        order = np.argsort(x)
        weight = np.hypot(dx, dy)[receding & below][order]
        u = float(x[order][np.searchsorted(np.cumsum(weight), weight.sum() / 2)])
    else:
        u = float(vanishing_point[0])
    return np.array([u, float(horizon_row(down, K, u))])


def street_wall_feet(labels: np.ndarray, vanishing_point: np.ndarray, share: float = 0.9) -> np.ndarray:
    """Per working column, the row of a street's wall foot, or nan: on each side of the vanishing point the
    walls run along the view, so their feet lie on a line through it. Of the feet seen on the ground in the
    outer half of that side, the line takes a low one (`share`: ground labels slip up a wall's shaded base,
    which puts feet too high, never too low)."""
    h, w = labels.shape
    vertical = labels == VERTICAL
    cols = np.arange(w)
    has = vertical.any(axis=0)
    foot = h - 1 - np.argmax(vertical[::-1], axis=0)
    on_ground = has & ((foot == h - 1) | (labels[np.minimum(foot + 1, h - 1), cols] == GROUND))
    vx, vy = vanishing_point
    out = np.full(w, np.nan)
    for side in (cols < vx - 1, cols > vx + 1):
        off_centre = np.abs(cols + 0.5 - vx)
        edge_ward = side & (off_centre >= 0.5 * off_centre[side].max()) if side.any() else side
        use = edge_ward & on_ground & (foot + 1 > vy)
        if use.sum() < 0.2 * max(edge_ward.sum(), 1):
            continue
        slope = np.quantile((foot[use] + 1 - vy) / (cols[use] + 0.5 - vx),
                            share if vx < cols[use].mean() else 1 - share)
        out[side] = vy + slope * (cols[side] + 0.5 - vx)
    return out


def lift(pixels: np.ndarray, K: np.ndarray, reading: Reading, camera_height: float,
         far: float, street_vanishing_point: np.ndarray | None = None) -> tuple[OpenScene, dict[str, Any]]:
    """The reading as a scene: ground plane, folded pop-ups standing on it, the dome. In a street (its
    vanishing point given), nothing at the sides stands farther than the walls' foot lines."""
    down = reading.down
    right, forward = ground_frame(down)
    labels = reading.labels.copy()
    hw, ww = labels.shape
    s = reading.scale

    def reach_at(col: np.ndarray, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Horizontal distance to where the ray through working pixel edge (col, row) meets the ground, and
        the ray's horizontal direction (unit, as ground x and z)."""
        rays = np.linalg.solve(K, np.stack([col * s, row * s, np.ones_like(col, float)]).astype(float)).T
        dd = rays @ down
        flat = np.stack([rays @ right, rays @ forward], 1)
        horizontal = np.linalg.norm(flat, axis=1)
        with np.errstate(divide="ignore"):
            reach = np.where(dd > 1e-9, camera_height * horizontal / np.maximum(dd, 1e-12), np.inf)
        return reach, flat / horizontal[:, None]

    popups: list[Popup] = []
    far_mask = labels == SKY
    count, components = cv2.connectedComponents((labels == VERTICAL).astype(np.uint8), connectivity=8)
    min_area = 0.002 * hw * ww
    horizon = horizon_row(down, K, (np.arange(ww) + 0.5) * s) / s
    wall_feet = None
    if street_vanishing_point is not None:  # the walls run along the ground: their lines meet on the horizon
        vx = float(street_vanishing_point[0]) / s
        wall_feet = street_wall_feet(labels, np.array([vx, np.interp(vx, np.arange(ww) + 0.5, horizon)]))
    for c in range(1, count):
        mask = components == c
        if mask.sum() < min_area:  # specks: painted onto whatever they sit in
            labels[mask] = np.where(np.nonzero(mask)[0] > horizon[np.nonzero(mask)[1]], GROUND, SKY)
            far_mask |= mask & (labels == SKY)
            continue
        cols = np.flatnonzero(mask.any(axis=0))
        foot = hw - 1 - np.argmax(mask[::-1, cols], axis=0)  # lowest row of the region in each column
        below = np.minimum(foot + 1, hw - 1)
        on_ground = (foot == hw - 1) | (labels[below, cols] == GROUND)
        if not on_ground.any():  # its foot is hidden everywhere: stand it on its lowest visible row
            on_ground = foot == foot.max()
        reach, heading = reach_at(cols + 0.5, (foot + 1).astype(float))
        reach = np.interp(cols, cols[on_ground], reach[on_ground]) if np.isfinite(reach[on_ground]).all() else reach
        reach = ndimage.median_filter(np.nan_to_num(reach, posinf=1e9), size=5, mode="nearest")
        if wall_feet is not None:
            line = wall_feet[cols]
            known = np.isfinite(line) & (line < hw)
            if known.any():
                wall_reach = reach_at(cols[known] + 0.5, line[known])[0]
                reach[known] = np.minimum(reach[known], np.where(np.isfinite(wall_reach), wall_reach, np.inf))
        cuts = np.flatnonzero((np.abs(np.log(reach[1:] / reach[:-1])) > math.log(DEPTH_CUT))
                              | (np.diff(cols) > 1)) + 1
        for part in np.split(np.arange(len(cols)), cuts):
            piece = np.zeros_like(mask)
            piece[:, cols[part]] = mask[:, cols[part]]
            if np.median(reach[part]) > far:  # a distant mountain or skyline: part of the dome
                far_mask |= piece
            elif piece.sum() >= min_area / 4:
                straight = straightened(np.minimum(reach[part], far), heading[part])
                popups.append(Popup(piece, cols[part], np.clip(straight, 0.5 * reach[part].min(), far),
                                    on_ground[part]))

    owner_work = np.full((hw, ww), GROUND_OWNER, np.int32)
    owner_work[far_mask] = FAR_OWNER
    for k, popup in enumerate(popups):
        owner_work[popup.mask] = k
    # Unclaimed vertical pixels (small split-off pieces) show the dome.
    owner_work[(labels == VERTICAL) & (owner_work == GROUND_OWNER)] = FAR_OWNER
    h, w = pixels.shape[:2]
    owner = cv2.resize(owner_work, (w, h), interpolation=cv2.INTER_NEAREST)
    # The ground's outline is only as exact as the working resolution; near the horizon one pixel of error
    # smears a pop-up's colour metres along the ground, so the ground's edge pixels count as unseen.
    edge = max(1, round(s))
    seen_ground = cv2.erode((owner == GROUND_OWNER).astype(np.uint8), np.ones((2 * edge + 1, 2 * edge + 1), np.uint8))
    owner[(owner == GROUND_OWNER) & (seen_ground == 0)] = UNSEEN_OWNER

    vertices, uv, faces, face_owner = popup_meshes(popups, K, down, s)
    ground = ground_texture(pixels, K, owner, down, right, forward, camera_height, far)
    walls = [wall for k, popup in enumerate(popups)
             if (wall := wall_beyond_frame(k, popup, pixels, K, owner, down, right, forward, camera_height, far, s))]
    walled_in = {popups[wall.popup].cols[0] == 0 for wall in walls} == {True, False}
    dome = dome_texture(pixels, K, owner, down, right, forward, ground.reshape(-1, 3).mean(axis=0), walled_in)
    canvas, canvas_owner = pixels, owner
    if walls:
        canvas = np.vstack([pixels, *(w_.texture for w_ in walls)])
        canvas_owner = np.vstack([owner, *(np.full(w_.texture.shape[:2], w_.popup, np.int32) for w_ in walls)])
        row = h
        for wall in walls:
            faces = np.concatenate([faces, wall.faces + len(vertices)])
            vertices = np.concatenate([vertices, wall.vertices])
            uv = np.concatenate([uv, wall.uv + [0.0, row]])
            face_owner = np.concatenate([face_owner, np.full(len(wall.faces), wall.popup, np.int32)])
            row += wall.texture.shape[0]
    scene = OpenScene(pixels, K, owner, down, right, forward, camera_height, far, ground, dome,
                      vertices, uv, faces, face_owner, canvas, canvas_owner)
    fractions = [float(np.mean(owner_work == o)) for o in (FAR_OWNER, GROUND_OWNER)]
    fit = {"sky_fraction": round(float(np.mean(labels == SKY)), 4),
           "dome_fraction": round(fractions[0], 4), "ground_fraction": round(fractions[1], 4),
           "popups": len(popups), "walls_continued_beyond_frame": len(walls),
           "popup_depth_m": [round(float(np.median(p.reach)), 2) for p in popups],
           "popup_triangles": int(len(faces))}
    return scene, fit


def straightened(reach: np.ndarray, heading: np.ndarray, tolerance: float = 0.05) -> np.ndarray:
    """A pop-up's foot as a few straight runs on the ground (walls are straight; a superpixel outline is
    not): Douglas-Peucker over the foot points with a tolerance of `tolerance` times their distance, then
    each column's reach is where its ray meets its run."""
    points = reach[:, None] * heading
    epsilon = tolerance * float(np.median(reach))
    if len(points) >= 2:  # one straight wall if most of the foot agrees with it (outliers: label slips)
        vx, vy, x0, y0 = cv2.fitLine(points.astype(np.float32), cv2.DIST_HUBER, 0, 0.01, 0.01).ravel()
        off = np.abs((points[:, 0] - x0) * vy - (points[:, 1] - y0) * vx)
        if np.mean(off < epsilon) > 0.8:
            along = (points[:, 0] - x0) * vx + (points[:, 1] - y0) * vy
            points = np.c_[x0 + along * vx, y0 + along * vy]
            keep = [0, len(points) - 1]
        else:
            keep = _douglas_peucker(points, epsilon)
    else:
        keep = [0]
    out = reach.copy()
    for a, b in zip(keep[:-1], keep[1:]):
        edge = points[b] - points[a]
        rays = heading[a: b + 1]
        denominator = rays[:, 0] * edge[1] - rays[:, 1] * edge[0]
        numerator = points[a, 0] * edge[1] - points[a, 1] * edge[0]
        ok = np.abs(denominator) > 1e-9
        hit = np.where(ok, numerator / np.where(ok, denominator, 1.0), reach[a: b + 1])
        out[a: b + 1] = np.where(hit > 0, hit, reach[a: b + 1])
    return out


def _douglas_peucker(points: np.ndarray, epsilon: float) -> list[int]:
    """Indices of the vertices Douglas-Peucker keeps of an open 2D polyline."""
    keep = {0, len(points) - 1}
    stack = [(0, len(points) - 1)]
    while stack:
        a, b = stack.pop()
        if b - a < 2:
            continue
        edge = points[b] - points[a]
        rel = points[a + 1: b] - points[a]
        distance = np.abs(rel[:, 0] * edge[1] - rel[:, 1] * edge[0]) / max(float(np.linalg.norm(edge)), 1e-9)
        i = int(np.argmax(distance))
        if distance[i] > epsilon:
            keep.add(a + 1 + i)
            stack += [(a, a + 1 + i), (a + 1 + i, b)]
    return sorted(keep)


def popup_meshes(popups: list[Popup], K: np.ndarray, down: np.ndarray,
                 scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One grid mesh per pop-up over its outline (dilated a cell; the renderer's alpha test trims it).

    A vertex on concept pixel (u, v) lies on the ray through that pixel, at the horizontal distance of the
    pop-up's foot in that column: each column stands upright, and the columns fold along the foot line."""
    all_v, all_uv, all_f, all_o = [], [], [], []
    offset = 0
    for k, popup in enumerate(popups):
        rows = np.flatnonzero(popup.mask.any(axis=1))
        c0, c1, r0, r1 = popup.cols[0], popup.cols[-1] + 1, rows[0], rows[-1] + 1
        xs = np.unique(np.r_[np.arange(c0, c1, MESH_STEP), c1]).astype(float)
        ys = np.unique(np.r_[np.arange(r0, r1, MESH_STEP), r1]).astype(float)
        reach = np.interp(xs, popup.cols + 0.5, popup.reach)
        gx, gy = np.meshgrid(xs, ys)
        pix = np.stack([gx * scale, gy * scale, np.ones_like(gx)], -1).reshape(-1, 3)
        rays = pix @ np.linalg.inv(K).T
        horizontal = np.linalg.norm(rays - (rays @ down)[:, None] * down, axis=1)
        points = rays * (np.repeat(reach[None], len(ys), 0).ravel() / np.maximum(horizontal, 1e-9))[:, None]
        # Cells that hold any of the pop-up (dilated by one cell so the alpha test has room to trim).
        cell = np.zeros((len(ys) - 1, len(xs) - 1), bool)
        iy = np.clip(np.searchsorted(ys, np.arange(popup.mask.shape[0]) + 0.5) - 1, 0, len(ys) - 2)
        ix = np.clip(np.searchsorted(xs, np.arange(popup.mask.shape[1]) + 0.5) - 1, 0, len(xs) - 2)
        rr, cc = np.nonzero(popup.mask)
        inside = (rr >= r0) & (rr < r1) & (cc >= c0) & (cc < c1)
        cell[iy[rr[inside]], ix[cc[inside]]] = True
        cell = ndimage.binary_dilation(cell, np.ones((3, 3), bool))
        cy, cx = np.nonzero(cell)
        nx = len(xs)
        a = cy * nx + cx
        quads = np.stack([a, a + 1, a + nx + 1, a + nx], 1)
        tris = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
        all_v.append(points)
        all_uv.append(pix[:, :2])
        all_f.append(tris + offset)
        all_o.append(np.full(len(tris), k, np.int32))
        offset += len(points)
    if not all_v:
        return np.zeros((0, 3)), np.zeros((0, 2)), np.zeros((0, 3), np.int32), np.zeros(0, np.int32)
    return (np.concatenate(all_v), np.concatenate(all_uv), np.concatenate(all_f).astype(np.int32),
            np.concatenate(all_o))


# -- 4. unseen parts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WallBeyond:
    """A straight pop-up cut by the frame's edge that runs along the view, continued along its foot line
    beyond the frame (a street's walls run on beside and behind the camera): a quad strip with its own
    synthesised texture."""

    popup: int
    vertices: np.ndarray  # (V, 3)
    uv: np.ndarray  # (V, 2) pixels in `texture`
    faces: np.ndarray  # (T, 3) int32
    texture: np.ndarray  # (th, w, 3) uint8, as wide as the concept image


WALL_TEXEL_M = 0.05  # the continued wall's texture resolution, at most (it must fit the concept's width)


def wall_beyond_frame(k: int, popup: Popup, pixels: np.ndarray, K: np.ndarray, owner: np.ndarray,
                      down: np.ndarray, right: np.ndarray, forward: np.ndarray, camera_height: float, far: float,
                      scale: float) -> WallBeyond | None:
    """The continuation of pop-up k beyond the left or right edge of the frame, if its foot is one straight
    line that the edge cuts; None otherwise."""
    h_work, w_work = popup.mask.shape
    at_left, at_right = popup.cols[0] == 0, popup.cols[-1] == w_work - 1
    if at_left == at_right or len(popup.cols) < 4:
        return None
    near_edge = popup.grounded[: len(popup.cols) // 3 + 1] if at_left else popup.grounded[-(len(popup.cols) // 3 + 1):]
    if near_edge.mean() < 0.7:
        return None  # where it meets the frame, its foot is hidden: nothing says where it runs
    cols = popup.cols + 0.5
    foot_rows = h_work - np.argmax(popup.mask[::-1, popup.cols], axis=0)  # the edge below the lowest pixel
    rays = np.linalg.solve(K, np.stack([cols * scale, foot_rows * scale, np.ones(len(cols))])).T
    flat = np.stack([rays @ right, rays @ forward], 1)
    feet = popup.reach[:, None] * flat / np.linalg.norm(flat, axis=1, keepdims=True)
    feet = feet[popup.reach < 0.99 * far]  # feet clipped at the far limit are not on its line
    if len(feet) < 4:
        return None
    edge, other = (feet[0], feet[-1]) if at_left else (feet[-1], feet[0])
    along = edge - other
    seen_length = float(np.linalg.norm(along))
    if seen_length < 0.5:
        return None
    along /= seen_length
    if abs(along[1]) < math.cos(math.radians(35)):
        return None  # a wall across the view may end anywhere beyond the frame; one along it lines a street
    residual = np.abs((feet - other) @ np.array([-along[1], along[0]]))
    if residual.max() > 0.05 * float(np.median(popup.reach)) + 0.05:
        return None  # a bent or rounded foot: nothing says how it goes on
    length = far  # a street goes on behind the camera, as far as the modelled world
    # Its height where the frame cuts it (a building goes on up where the frame also cuts its top).
    col = 0 if at_left else len(popup.cols) - 1
    rows = np.flatnonzero(popup.mask[:, popup.cols[col]])
    top = np.linalg.solve(K, [cols[col] * scale, rows[0] * scale, 1.0])
    top_height = camera_height - float(popup.reach[col] * (top @ down) / np.linalg.norm([top @ right, top @ forward]))
    if rows[0] == 0:
        top_height *= 3.0
    if top_height <= 0.2:
        return None
    w = pixels.shape[1]
    density = min(1.0 / WALL_TEXEL_M, (w - 1) / (length + seen_length))
    n_s, n_z = int(math.ceil((length + seen_length) * density)) + 1, int(math.ceil(top_height * density)) + 1
    # Texels over s in [-seen_length, length] (0 at the frame's edge) and height top_height .. 0.
    u, v = pixel_centres(n_s, n_z)
    s_m, z_m = u / density - seen_length, top_height - v / density
    ground_xy = edge[None, None] + s_m[..., None] * along
    points = (camera_height - z_m)[..., None] * down + ground_xy[..., :1] * right + ground_xy[..., 1:] * forward
    pu, pv, who = _project(points, K, owner)
    known = who == k
    colour = cv2.remap(pixels, np.where(known, pu - 0.5, 0).astype(np.float32),
                       np.where(known, pv - 0.5, 0).astype(np.float32), cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)
    if known.sum() < 16:
        return None
    # A wall's colour changes mostly with height (plinth, storeys, eaves): per row, then patches for detail,
    # both from the stretch nearest the frame's edge (a street's next house looks like this one, not like
    # the one at the far end).
    nearest = known & (s_m > -max(3.0, 0.25 * seen_length))
    known_near = nearest if nearest.sum() >= 16 else known
    counts = known_near.sum(axis=1)
    have = np.flatnonzero(counts)
    sums = (colour.astype(np.float32) * known_near[..., None]).sum(axis=1) / np.maximum(counts, 1)[:, None]
    row_colour = np.stack([np.interp(np.arange(n_z), have, sums[have, c]) for c in range(3)], 1)
    smooth = np.broadcast_to(row_colour[:, None], colour.shape).astype(np.float32)
    texture = continue_texture(colour, known, smooth, patch=max(4, min(24, n_z // 3)), sources=known_near)
    first = max(0, int(seen_length * density) - 1)  # the continuation's texture starts at the frame's edge
    texture = np.ascontiguousarray(texture[:, first:])
    tw = texture.shape[1]
    texture = np.pad(texture, ((0, 0), (0, w - tw), (0, 0)), mode="edge")
    steps = np.linspace(0.0, length, max(2, int(length / 0.5) + 1))
    heights = np.array([top_height, 0.0])
    ss, zz = np.meshgrid(steps, heights)
    foot = edge[None, None] + ss[..., None] * along
    vertices = ((camera_height - zz)[..., None] * down + foot[..., :1] * right + foot[..., 1:] * forward).reshape(-1, 3)
    uv = np.stack([(ss + seen_length) * density - first, (top_height - zz) * density], -1).reshape(-1, 2)
    n = len(steps)
    a = np.arange(n - 1)
    faces = np.concatenate([np.c_[a, a + 1, a + n + 1], np.c_[a, a + n + 1, a + n]]).astype(np.int32)
    return WallBeyond(k, vertices, uv, faces, texture)


def _project(points: np.ndarray, K: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Concept-image coordinates of (..., 3) points or directions, and the owner there (unseen outside)."""
    h, w = owner.shape
    z = points[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = K[0, 0] * points[..., 0] / z + K[0, 2]
        v = K[1, 1] * points[..., 1] / z + K[1, 2]
    inside = (z > 1e-6) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    who = np.full(z.shape, UNSEEN_OWNER, np.int32)
    who[inside] = owner[v[inside].astype(int), u[inside].astype(int)]
    return u, v, who


def ground_texture(pixels: np.ndarray, K: np.ndarray, owner: np.ndarray, down: np.ndarray, right: np.ndarray,
                   forward: np.ndarray, camera_height: float, far: float) -> np.ndarray:
    """The ground over [-far, far]^2 seen from above: seen texels from the concept image, the rest
    synthesised."""
    u, v = pixel_centres(GROUND_TEXELS, GROUND_TEXELS)
    gx, gz = u / GROUND_TEXELS * 2 * far - far, v / GROUND_TEXELS * 2 * far - far
    points = camera_height * down + gx[..., None] * right + gz[..., None] * forward
    pu, pv, who = _project(points, K, owner)
    known = who == GROUND_OWNER
    blurred = cv2.GaussianBlur(pixels, (0, 0), 1.0)
    colour = cv2.remap(blurred, np.where(known, pu - 0.5, 0).astype(np.float32),
                       np.where(known, pv - 0.5, 0).astype(np.float32), cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)
    # Detail is copied from the nearer half of what was seen: far off, one concept pixel is smeared over
    # many texels in depth, and its streaks are no texture to continue.
    distance = np.hypot(gx, gz)
    near = known & (distance <= np.median(distance[known])) if known.any() else known
    return continue_texture(colour, known, inpainted(colour, known), sources=near)


def dome_texture(pixels: np.ndarray, K: np.ndarray, owner: np.ndarray, down: np.ndarray, right: np.ndarray,
                 forward: np.ndarray, ground_colour: np.ndarray, walled_in: bool = False) -> np.ndarray:
    """Equirectangular dome: what the concept image saw far away, the rest by elevation (a sky's colour
    depends mostly on how high one looks) with the seen texture's detail continued. Walled in (walls run on
    beyond both edges of the frame: a street, a canyon), an elevation that shows mostly standing things
    shows them all round too: looking back down a street one sees more houses, not the slice of sky that
    showed between the roofs ahead."""
    rows, cols = DOME_SIZE
    u, v = pixel_centres(cols, rows)
    lon, lat = u / cols * 2 * np.pi - np.pi, np.pi / 2 - v / rows * np.pi
    dirs = (np.cos(lat)[..., None] * (np.sin(lon)[..., None] * right + np.cos(lon)[..., None] * forward)
            - np.sin(lat)[..., None] * down)
    pu, pv, who = _project(dirs, K, owner)
    known = who == FAR_OWNER
    colour, row_colour = _seen_by_elevation(pixels, pu, pv, known)
    if not known.any():
        seen = pixels[owner == FAR_OWNER] if (owner == FAR_OWNER).any() else pixels.reshape(-1, 3)
        return np.broadcast_to(np.median(seen, axis=0).astype(np.uint8), (rows, cols, 3)).copy()
    counts = known.sum(axis=1)
    have = np.flatnonzero(counts)
    row_colour = np.stack([np.interp(np.arange(rows), have, row_colour[have, k]) for k in range(3)], 1)
    # Below the horizon, where the picture saw nothing far away, the dome shows distant ground.
    row_colour[(lat[:, 0] < 0) & (counts == 0)] = ground_colour
    if walled_in:
        standing = who >= 0
        walled = (lat[:, 0] > 0) & (standing.sum(axis=1) > WALLED_SHARE * (standing | known).sum(axis=1))
        row_colour[walled] = _seen_by_elevation(pixels, pu, pv, standing)[1][walled]
    smooth = np.broadcast_to(row_colour[:, None], colour.shape).astype(np.float32)
    return continue_texture(colour, known, smooth)


def _seen_by_elevation(pixels: np.ndarray, pu: np.ndarray, pv: np.ndarray,
                       seen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The concept image's colour at the dome texels where `seen`, and its median per dome row (nan where
    a row saw none). The median, not the mean: texels along an outline carry the neighbour's colour."""
    colour = cv2.remap(pixels, np.where(seen, pu - 0.5, 0).astype(np.float32),
                       np.where(seen, pv - 0.5, 0).astype(np.float32), cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return colour, np.nanmedian(np.where(seen[..., None], colour.astype(np.float32), np.nan), axis=1)


def inpainted(colour: np.ndarray, known: np.ndarray, factor: int = 8) -> np.ndarray:
    """Smooth colour everywhere: the known texels averaged down, Telea inpainting of the rest, back up."""
    h, w = known.shape
    small_w, small_h = max(1, w // factor), max(1, h // factor)
    weight = cv2.resize(known.astype(np.float32), (small_w, small_h), interpolation=cv2.INTER_AREA)
    total = cv2.resize(colour.astype(np.float32) * known[..., None], (small_w, small_h),
                       interpolation=cv2.INTER_AREA)
    if not (weight > 0.25).any():
        fill = np.median(colour[known], axis=0) if known.any() else np.full(3, 128.0)
        return np.broadcast_to(fill.astype(np.float32), colour.shape).copy()
    mean = np.clip(total / np.maximum(weight, 1e-6)[..., None], 0, 255).astype(np.uint8)
    filled = cv2.inpaint(mean, (weight <= 0.25).astype(np.uint8), 3, cv2.INPAINT_TELEA)
    return cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)


def continue_texture(colour: np.ndarray, known: np.ndarray, smooth: np.ndarray, patch: int = 24,
                     seed: int = 0, sources: np.ndarray | None = None) -> np.ndarray:
    """Known texels as they are; unknown ones get the smooth colour plus fine detail taken from randomly
    chosen, wholly known patches of the texture (within `sources`, default all known; deterministic: a
    fixed seed)."""
    out = smooth.copy()
    detail = colour.astype(np.float32) - cv2.GaussianBlur(colour.astype(np.float32), (0, 0), patch / 6)
    # A patch must lie wholly inside what was seen, and a few texels clear of its edge: texels along the
    # edge carry colour of whatever bordered it (a statue's outline would reappear in the sky).
    margin = patch + 2 * max(2, patch // 6)
    fully_known = ndimage.binary_erosion(known if sources is None else sources, np.ones((margin, margin), bool),
                                         border_value=0)
    sources = np.argwhere(fully_known)
    h, w = known.shape
    if len(sources):
        rng = np.random.default_rng(seed)
        sources -= patch // 2  # centre -> top-left corner
        for y in range(0, h, patch):
            for x in range(0, w, patch):
                block = ~known[y: y + patch, x: x + patch]
                if block.any():
                    sy, sx = sources[rng.integers(len(sources))]
                    bh, bw = block.shape
                    out[y: y + bh, x: x + bw] += detail[sy: sy + bh, sx: sx + bw]
    out[known] = colour[known]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


# -- free space ------------------------------------------------------------------------------------------


def scene_clearance(scene: OpenScene) -> Clearance:
    """Metres from points to the nearest of: the ground, the edge of the modelled world, a pop-up."""
    if len(scene.faces):
        samples = np.concatenate([scene.vertices, scene.vertices[scene.faces].mean(axis=1)])
        tree = cKDTree(samples)
    else:
        tree = None

    def clearance(points: np.ndarray) -> np.ndarray:
        above = scene.camera_height - points @ scene.down
        edge = scene.far - np.maximum(np.abs(points @ scene.right), np.abs(points @ scene.forward))
        near = tree.query(points)[0] if tree is not None else np.inf
        return np.minimum(np.minimum(above, edge), near)

    return clearance


def overlay(pixels: np.ndarray, scene: OpenScene, width: int = 480) -> np.ndarray:
    """The labelling over the concept image, for eyes: sky blue, ground green, each pop-up its own colour,
    the dome's other parts grey, the horizon a red line."""
    h, w = pixels.shape[:2]
    size = (width, round(width * h / w))
    base = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    owner = cv2.resize(scene.owner, size, interpolation=cv2.INTER_NEAREST)
    colours = np.zeros(base.shape, np.float32)
    colours[(owner == GROUND_OWNER) | (owner == UNSEEN_OWNER)] = (60, 200, 60)
    colours[owner == FAR_OWNER] = (70, 130, 255)
    for k in range(int(owner.max()) + 1):
        hue = int(180 * ((k * 0.618) % 1.0))
        colours[owner == k] = cv2.cvtColor(np.uint8([[[hue, 200, 255]]]), cv2.COLOR_HSV2RGB)[0, 0]
    out = (0.5 * base + 0.5 * colours).astype(np.uint8)
    edges = find_boundaries(owner, mode="inner")
    out[edges] = 255
    f = width / w
    x0, x1 = 0.0, float(w)
    y0, y1 = horizon_row(scene.down, scene.K_concept, x0), horizon_row(scene.down, scene.K_concept, x1)
    cv2.line(out, (0, int(round(y0 * f))), (width - 1, int(round(y1 * f))), (255, 40, 40), 2, cv2.LINE_AA)
    return out
