"""A preview sheet: the concept image and a few walkthrough frames on top, the LODs and collider below.

The meshes are drawn by a small numpy z-buffer rasteriser (orthographic three-quarter view, back faces
culled, albedo sampled per pixel, one directional light), so the preview needs no OpenGL context and runs on
any headless farm node. Back-face culling is what makes a room readable from outside: its walls face
inwards, so the near walls and the ceiling drop away and the view looks into the room like a cut-away.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..assets import LevelAsset
from ..files import write_atomically

BACKGROUND = (48, 48, 54)  # behind the meshes
_SHEET_BACKGROUND = (16, 16, 18)  # between the tiles
_COLLIDER_GREY = np.array([170, 170, 170], np.float64)
_GAP = 4  # pixels between tiles
# Candidate (triangle, pixel) pairs per rasteriser batch: bounds memory at about 200 MB.
_BATCH = 1 << 20


@dataclass(frozen=True)
class View:
    """An orthographic camera: pixel = scale * (rotation @ p)[:2] + shift, depth = (rotation @ p)[2]."""

    rotation: np.ndarray  # (3, 3) world to view; rows are the view's right, down, forward (OpenCV axes)
    scale: float  # pixels per metre
    shift: np.ndarray  # (2,) pixels
    width: int
    height: int

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = np.asarray(points, np.float64) @ self.rotation.T
        return p[:, :2] * self.scale + self.shift, p[:, 2]


def three_quarter_view(points: np.ndarray, width: int, height: int, margin: float = 0.05) -> View:
    """Look down at the points from above, behind and to the right of the first camera, framing them all."""
    # World axes are OpenCV's (y down, z forward from the first camera), so "above and behind" is -y, -z.
    forward = -np.array([0.55, -0.75, -1.0]) / np.linalg.norm([0.55, -0.75, -1.0])
    right = np.cross([0.0, 1.0, 0.0], forward)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    xy = np.asarray(points, np.float64) @ rotation[:2].T
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    usable = np.array([width, height]) * (1.0 - 2.0 * margin)
    scale = float(np.min(usable / np.maximum(hi - lo, 1e-6)))
    shift = np.array([width, height]) / 2.0 - scale * (lo + hi) / 2.0
    return View(rotation, scale, shift, width, height)


def render_mesh(vertices: np.ndarray, faces: np.ndarray, view: View, uv: np.ndarray | None = None,
                albedo: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8 image of the mesh: albedo-textured where uv and albedo are given, else flat grey."""
    vertices = np.asarray(vertices, np.float64)
    faces = np.asarray(faces, np.int64).reshape(-1, 3)
    normals = np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]])
    length = np.linalg.norm(normals, axis=1)
    facing = (normals @ view.rotation[2] < 0) & (length > 0)  # normal towards the camera: a front face
    faces, normals = faces[facing], normals[facing] / length[facing, None]

    xy, depth = view.project(vertices)
    tri, bary = _rasterise(xy, depth, faces, view.width, view.height)
    covered = tri >= 0
    image = np.empty((view.height * view.width, 3), np.float64)
    image[:] = BACKGROUND
    hit_faces = faces[tri[covered]]
    if uv is not None and albedo is not None:
        texel_uv = np.einsum("nk,nkc->nc", bary[covered], np.asarray(uv, np.float64)[hit_faces])
        rows, cols = albedo.shape[:2]
        r = np.clip((texel_uv[:, 1] * rows).astype(np.int64), 0, rows - 1)  # v grows downwards (glTF)
        c = np.clip((texel_uv[:, 0] * cols).astype(np.int64), 0, cols - 1)
        colour = albedo[r, c, :3].astype(np.float64)
    else:
        colour = _COLLIDER_GREY
    # Light from above and over the viewer's shoulder; the ambient term keeps faces turned away readable.
    light = -view.rotation[2] + np.array([0.0, -1.0, 0.0])
    light /= np.linalg.norm(light)
    shade = 0.4 + 0.6 * np.clip(normals[tri[covered]] @ light, 0.0, 1.0)
    image[covered] = colour * shade[:, None]
    return np.clip(image + 0.5, 0, 255).astype(np.uint8).reshape(view.height, view.width, 3)


def _rasterise(xy: np.ndarray, depth: np.ndarray, faces: np.ndarray, width: int,
               height: int) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel (flattened): the nearest triangle covering its centre (-1 for none) and the barycentric
    weights there. Each triangle is tested against the pixel centres in its bounding box, all triangles of
    a batch at once; the nearest candidate per pixel wins."""
    a, b, c = xy[faces[:, 0]], xy[faces[:, 1]], xy[faces[:, 2]]
    area = _cross(b - a, c - a)
    corners = np.stack([a, b, c])
    # Pixel (i, j) has its centre at (i + 0.5, j + 0.5).
    lo = np.clip(np.ceil(corners.min(axis=0) - 0.5), 0, [width, height]).astype(np.int64)
    hi = np.clip(np.floor(corners.max(axis=0) - 0.5), -1, [width - 1, height - 1]).astype(np.int64)
    span = np.maximum(hi - lo + 1, 0)
    candidates = span[:, 0] * span[:, 1] * (np.abs(area) > 1e-12)
    todo = np.flatnonzero(candidates)
    ends = np.cumsum(candidates[todo])

    zbuf = np.full(width * height, np.inf)
    tri_buf = np.full(width * height, -1, np.int64)
    bary_buf = np.zeros((width * height, 3))
    start = 0
    while start < len(todo):
        done = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, done + _BATCH, side="right")), start + 1)
        t = todo[start:stop]
        counts = candidates[t]
        tri = np.repeat(t, counts)
        k = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        px = lo[tri, 0] + k % span[tri, 0]
        py = lo[tri, 1] + k // span[tri, 0]
        p = np.stack([px + 0.5, py + 0.5], axis=1)
        w0 = _cross(b[tri] - p, c[tri] - p) / area[tri]
        w1 = _cross(c[tri] - p, a[tri] - p) / area[tri]
        w2 = 1.0 - w0 - w1
        inside = (w0 >= -1e-9) & (w1 >= -1e-9) & (w2 >= -1e-9)
        tri, w = tri[inside], np.stack([w0, w1, w2], axis=1)[inside]
        z = np.einsum("nk,nk->n", w, depth[faces[tri]])
        pixel = (py * width + px)[inside]
        order = np.lexsort((z, pixel))  # by pixel, nearest first
        first = order[np.r_[True, pixel[order][1:] != pixel[order][:-1]]]
        first = first[z[first] < zbuf[pixel[first]]]
        where = pixel[first]
        zbuf[where], tri_buf[where], bary_buf[where] = z[first], tri[first], w[first]
        start = stop
    return tri_buf, bary_buf


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


def render_preview(asset: LevelAsset, input_image: np.ndarray | None, frames: Sequence[np.ndarray], path: Path,
                   *, tile_height: int = 240, max_frames: int = 4) -> None:
    """Write a PNG sheet (atomically): the input and up to `max_frames` frames spread over the walkthrough
    in the top row; every LOD and the collider, from one shared three-quarter view, in the bottom row."""
    top = []
    if input_image is not None:
        top.append(_labelled(_fit_height(input_image, tile_height), "input"))
    if len(frames):
        picks = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int))
        top += [_labelled(_fit_height(frames[i], tile_height), f"frame {i}") for i in picks]

    width = tile_height * 4 // 3
    collider = asset.collider
    view = three_quarter_view(np.concatenate([asset.lods[0].vertices, collider.vertices]), width, tile_height)
    bottom = [_labelled(render_mesh(lod.vertices, lod.faces, view, lod.uv, lod.albedo),
                        f"LOD{i}  {len(lod.faces):,} tris") for i, lod in enumerate(asset.lods)]
    bottom.append(_labelled(render_mesh(collider.vertices, collider.faces, view),
                            f"collider  {len(collider.faces):,} tris"))

    sheet = _sheet([row for row in (top, bottom) if row])
    write_atomically(Path(path), lambda f: Image.fromarray(sheet).save(f, format="PNG"))


def _fit_height(image: np.ndarray, height: int) -> np.ndarray:
    pil = Image.fromarray(np.asarray(image, np.uint8))
    width = max(1, round(pil.width * height / pil.height))
    return np.asarray(pil.convert("RGB").resize((width, height), Image.Resampling.BILINEAR))


def _labelled(tile: np.ndarray, text: str) -> np.ndarray:
    pil = Image.fromarray(tile)
    draw = ImageDraw.Draw(pil)
    font = ImageFont.load_default()
    left, top, right, bottom = draw.textbbox((4, 4), text, font=font)
    draw.rectangle((left - 3, top - 3, right + 3, bottom + 3), fill=(0, 0, 0))
    draw.text((4, 4), text, fill=(255, 255, 255), font=font)
    return np.asarray(pil)


def _sheet(rows: list[list[np.ndarray]]) -> np.ndarray:
    row_widths = [sum(t.shape[1] for t in row) + _GAP * (len(row) - 1) for row in rows]
    height = sum(row[0].shape[0] for row in rows) + _GAP * (len(rows) + 1)
    sheet = np.empty((height, max(row_widths) + 2 * _GAP, 3), np.uint8)
    sheet[:] = _SHEET_BACKGROUND
    y = _GAP
    for row in rows:
        x = _GAP
        for tile in row:
            sheet[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
            x += tile.shape[1] + _GAP
        y += row[0].shape[0] + _GAP
    return sheet
