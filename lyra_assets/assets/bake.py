"""Texture baking: albedo from the walkthrough frames, tangent-space normals from the dense mesh.

Every texel a level's triangles cover (its centre inside a triangle in UV space) stands for one point on
the level's surface. That point is moved to the closest point of the dense mesh, so a coarse level shows
what the detailed surface looks like there:
- normal map: the dense mesh's interpolated normal, written in the level's tangent frame (glTF: unit
  vector * 0.5 + 0.5; tangent = +u, bitangent = w * cross(normal, tangent) = towards the image's top);
- albedo: the frames that see the dense point (in front of the camera, inside the image, facing it, and
  agreeing with the frame's depth) each add their bilinearly sampled colour, weighted by how well they
  see it; pixels the generator synthesised (walk.observed False) count SYNTHESISED_WEIGHT of observed ones.
  Only the MAX_VIEWS frames that see a neighbourhood of texels best take part (see `_gather`).
  Averaging happens in linear light (frames and the result are sRGB). A texel no frame sees takes the
  dense mesh's interpolated vertex colour.
Texels no triangle covers (the gutter) take the value of the nearest covered texel, so mipmaps and
bilinear filtering at chart borders never reach the background.

Pixel convention (trajectory.py): pixel (col, row) has its centre at continuous (col + 0.5, row + 0.5);
the same holds for texels, with u = (col + 0.5) / size, v = (row + 0.5) / size.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import cv2
import numba
import numpy as np

from ..walkthrough import Walkthrough
from .colour import SRGB_TO_LINEAR, to_srgb8
from .surface import Surface, SurfaceHit

SYNTHESISED_WEIGHT = 0.1  # a synthesised pixel's say relative to an observed one
MIN_VIEW_COSINE = 0.1  # frames seeing the surface more grazing than ~84 degrees give no colour
# A frame sees a point if its depth there agrees with the point's depth to within this much: fusion's
# surface sits within a voxel or two of the depth maps, and depth errors grow with distance.
DEPTH_TOLERANCE_M = 0.03
DEPTH_TOLERANCE_RELATIVE = 0.02
SORT_CELL_M = 0.1  # texels are processed in runs of about this cell size (see `texels`)
BLOCK_TEXELS = 512  # the albedo gather picks frames per block of this many (spatially sorted) texels
MAX_VIEWS = 8  # frames that colour one block, the best-seeing ones (`_gather`); on the 121-frame bench
#               room 8 views give 46.1 dB against 46.4 dB for 16, at half the time
CHUNK_TEXELS = 1 << 17  # texels baked at once (whole BLOCK_TEXELS blocks): about 32 MB of per-texel
#                        data, a chunk in flight per core

# -- texels ------------------------------------------------------------------------------------------------


@dataclass
class Texels:
    """The texels of a size x size atlas that a level's triangles cover, and the surface they show."""

    size: int
    index: np.ndarray  # (T,) flat texel index, row * size + col
    points: np.ndarray  # (T, 3) float64 on the level's surface
    normals: np.ndarray  # (T, 3) unit, interpolated vertex normals
    tangents: np.ndarray  # (T, 3) unit, orthogonal to normals
    bitangents: np.ndarray  # (T, 3) unit: handedness * cross(normal, tangent), as a glTF shader builds it

    @property
    def covered(self) -> np.ndarray:
        mask = np.zeros(self.size * self.size, bool)
        mask[self.index] = True
        return mask.reshape(self.size, self.size)


class TexelLayout:
    """The texels a level's triangles cover in a size x size atlas, in a cache-friendly order, handed out in
    chunks: per-texel data (points, frames, closest points) is only ever made for one chunk at a time, so a
    4096² bake needs little more memory than a 2048² one.

    Texels come grouped by triangle, triangles sorted by where they lie in space (SORT_CELL_M cells), so
    that the per-texel work reads the dense mesh and the frames in coherent runs instead of jumping
    across the scene.
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray, tangents: np.ndarray,
                 uv: np.ndarray, size: int) -> None:
        self.size = size
        self.faces = np.ascontiguousarray(faces, np.int64)
        self.vertices = np.ascontiguousarray(vertices, np.float64)
        self.normals = np.ascontiguousarray(normals, np.float64)
        self.tangents = np.ascontiguousarray(tangents, np.float64)
        self.uv_px = np.ascontiguousarray(uv, np.float64) * size
        self.face_map = _rasterise(self.uv_px, self.faces, size).ravel()  # (S * S,) int32, -1: uncovered
        rank = np.empty(len(self.faces), np.int64)
        rank[_spatial_order(self.vertices[self.faces].mean(axis=1))] = np.arange(len(self.faces))
        self.order = _group_by_rank(self.face_map, rank)  # (T,) flat texel index of every covered texel

    def __len__(self) -> int:
        return len(self.order)

    @property
    def covered(self) -> np.ndarray:
        return (self.face_map >= 0).reshape(self.size, self.size)

    def chunk(self, start: int, stop: int) -> Texels:
        """Texels order[start:stop] with the surface they show."""
        index = self.order[start:stop]
        faces = self.face_map[index]
        points, n, t, b = _texel_frames(index, faces, self.faces, self.uv_px, self.size, self.vertices,
                                        self.normals, self.tangents)
        return Texels(self.size, index, points, n, t, b)


def texels(vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray, tangents: np.ndarray,
           uv: np.ndarray, size: int) -> Texels:
    """Every covered texel of a level's atlas at once (see TexelLayout; the bake itself goes in chunks)."""
    layout = TexelLayout(vertices, faces, normals, tangents, uv, size)
    return layout.chunk(0, len(layout))


def _spatial_order(points: np.ndarray) -> np.ndarray:
    cells = np.floor((points - points.min(axis=0)) / SORT_CELL_M).astype(np.int64)
    dims = cells.max(axis=0) + 1
    return np.argsort((cells[:, 0] * dims[1] + cells[:, 1]) * dims[2] + cells[:, 2], kind="stable")


@numba.njit(cache=True)
def _group_by_rank(face_map, rank):
    """Indices of the covered texels (face_map >= 0), ordered by their face's rank (a counting sort)."""
    counts = np.zeros(len(rank) + 1, np.int64)
    for i in range(len(face_map)):
        if face_map[i] >= 0:
            counts[rank[face_map[i]] + 1] += 1
    for r in range(len(rank)):
        counts[r + 1] += counts[r]
    out = np.empty(counts[-1], np.int64)
    for i in range(len(face_map)):
        if face_map[i] >= 0:
            r = rank[face_map[i]]
            out[counts[r]] = i
            counts[r] += 1
    return out


@numba.njit(cache=True, inline="always")
def _centre_barycentrics(uv_px, face, col, row):
    """Barycentrics (b1, b2) of texel (col, row)'s centre in a triangle, from signed areas (either winding
    in UV space: charts may be mirrored); b0 = 1 - b1 - b2. Degenerate triangles give (-1, -1)."""
    x0, y0 = uv_px[face[0], 0], uv_px[face[0], 1]
    x1, y1 = uv_px[face[1], 0], uv_px[face[1], 1]
    x2, y2 = uv_px[face[2], 0], uv_px[face[2], 1]
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    if area == 0.0:
        return -1.0, -1.0
    px, py = col + 0.5, row + 0.5
    b1 = ((px - x0) * (y2 - y0) - (x2 - x0) * (py - y0)) / area
    b2 = ((x1 - x0) * (py - y0) - (px - x0) * (y1 - y0)) / area
    return b1, b2


@numba.njit(cache=True, nogil=True)  # serial, like every kernel of a chunk: bake_level runs chunks in threads
def _texel_frames(index, texel_faces, faces, uv_px, size, vertices, normals, tangents):
    """Point, unit normal, unit tangent (made orthogonal to the normal) and bitangent
    (handedness * cross(normal, tangent), as a glTF shader builds it) at each texel centre."""
    n = len(index)
    points, out_n = np.empty((n, 3)), np.empty((n, 3))
    out_t, out_b = np.empty((n, 3)), np.empty((n, 3))
    for i in range(n):
        face = faces[texel_faces[i]]
        w1, w2 = _centre_barycentrics(uv_px, face, index[i] % size, index[i] // size)
        w0 = 1.0 - w1 - w2
        a, b, c = face[0], face[1], face[2]
        for k in range(3):
            points[i, k] = w0 * vertices[a, k] + w1 * vertices[b, k] + w2 * vertices[c, k]
        nx = w0 * normals[a, 0] + w1 * normals[b, 0] + w2 * normals[c, 0]
        ny = w0 * normals[a, 1] + w1 * normals[b, 1] + w2 * normals[c, 1]
        nz = w0 * normals[a, 2] + w1 * normals[b, 2] + w2 * normals[c, 2]
        norm = max(np.sqrt(nx * nx + ny * ny + nz * nz), 1e-30)
        nx, ny, nz = nx / norm, ny / norm, nz / norm
        tx = w0 * tangents[a, 0] + w1 * tangents[b, 0] + w2 * tangents[c, 0]
        ty = w0 * tangents[a, 1] + w1 * tangents[b, 1] + w2 * tangents[c, 1]
        tz = w0 * tangents[a, 2] + w1 * tangents[b, 2] + w2 * tangents[c, 2]
        along = tx * nx + ty * ny + tz * nz
        tx, ty, tz = tx - along * nx, ty - along * ny, tz - along * nz
        norm = max(np.sqrt(tx * tx + ty * ty + tz * tz), 1e-30)
        tx, ty, tz = tx / norm, ty / norm, tz / norm
        # The corners of one triangle share a handedness (they share one UV chart's orientation).
        handed = -1.0 if tangents[a, 3] < 0 else 1.0
        out_n[i, 0], out_n[i, 1], out_n[i, 2] = nx, ny, nz
        out_t[i, 0], out_t[i, 1], out_t[i, 2] = tx, ty, tz
        out_b[i, 0] = handed * (ny * tz - nz * ty)
        out_b[i, 1] = handed * (nz * tx - nx * tz)
        out_b[i, 2] = handed * (nx * ty - ny * tx)
    return points, out_n, out_t, out_b


@numba.njit(cache=True)
def _rasterise(uv_px, faces, size):
    """Per texel: the face whose triangle holds its centre (-1: none; the last such face wins)."""
    face_map = np.full((size, size), -1, np.int32)
    for f in range(len(faces)):
        xs = (uv_px[faces[f, 0], 0], uv_px[faces[f, 1], 0], uv_px[faces[f, 2], 0])
        ys = (uv_px[faces[f, 0], 1], uv_px[faces[f, 1], 1], uv_px[faces[f, 2], 1])
        c0 = max(int(np.floor(min(xs) - 0.5)), 0)
        c1 = min(int(np.ceil(max(xs) - 0.5)), size - 1)
        r0 = max(int(np.floor(min(ys) - 0.5)), 0)
        r1 = min(int(np.ceil(max(ys) - 0.5)), size - 1)
        for row in range(r0, r1 + 1):
            for col in range(c0, c1 + 1):
                b1, b2 = _centre_barycentrics(uv_px, faces[f], col, row)
                if b1 >= 0.0 and b2 >= 0.0 and b1 + b2 <= 1.0:
                    face_map[row, col] = f
    return face_map


# -- the bake, chunk by chunk -----------------------------------------------------------------------------


@dataclass
class LevelBake:
    normal_map: np.ndarray  # (S, S, 3) uint8 tangent space, gutter filled
    albedo: AlbedoBake | None  # None when no albedo was asked for (the level shares another's atlas)


def bake_level(layout: TexelLayout, surface: Surface, walk: Walkthrough | None,
               progress: Callable[[int, int], None] = lambda done, total: None,
               chunk_texels: int = CHUNK_TEXELS) -> LevelBake:
    """Normal map (and albedo, given the walkthrough) of one level, CHUNK_TEXELS texels at a time;
    `progress(done, total)` after every chunk. Chunks are whole albedo blocks, so the result does not
    depend on the chunk size.

    Chunks run in threads, one a core: their serial kernels release the GIL. Serial kernels compile in
    a third of a parallel one's time, and threads also share out the chunk's numpy work."""
    chunk_texels = max(BLOCK_TEXELS, chunk_texels // BLOCK_TEXELS * BLOCK_TEXELS)
    normal = _TexelImage(layout.size)
    albedo = _AlbedoImage(layout.size) if walk is not None else None
    views = _Views(walk) if walk is not None else None
    total = len(layout)

    def bake_chunk(start: int) -> int:  # chunks cover disjoint texels: threads never write the same one
        stop = min(start + chunk_texels, total)
        tex = layout.chunk(start, stop)
        hit = surface.closest(tex.points)
        normal.put(tex.index, _encode_normals(tex, hit))
        if albedo is not None:
            albedo.put(tex.index, *views.colour(hit))
        return stop

    # As many threads as numba's parallel kernels use. map() cancels the chunks not started when one fails or
    # the bake is interrupted (Ctrl-C), so a cancel waits for the running chunks only.
    with ThreadPoolExecutor(numba.get_num_threads()) as pool:
        for stop in pool.map(bake_chunk, range(0, total, chunk_texels)):  # in order, from this thread
            progress(stop, total)
    covered = layout.covered
    nearest = _nearest_covered(covered)
    return LevelBake(normal.finish(nearest), None if albedo is None else albedo.finish(nearest))


class _TexelImage:
    """An (S, S, 3) uint8 image filled texel by texel; the gutter filled at the end."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.pixels = np.zeros((size * size, 3), np.uint8)

    def put(self, index: np.ndarray, values: np.ndarray) -> None:
        self.pixels[index] = values

    def finish(self, nearest: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
        if nearest is not None:
            holes, sources = nearest
            self.pixels[holes] = self.pixels[sources]
        return self.pixels.reshape(self.size, self.size, 3)


class _AlbedoImage(_TexelImage):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.seen = np.zeros(size * size, bool)
        self.observed = np.zeros(size * size, bool)

    def put(self, index: np.ndarray, values: np.ndarray, seen: np.ndarray, observed: np.ndarray) -> None:
        super().put(index, values)
        self.seen[index], self.observed[index] = seen, observed

    def finish(self, nearest: tuple[np.ndarray, np.ndarray] | None) -> AlbedoBake:
        shape = (self.size, self.size)
        return AlbedoBake(super().finish(nearest), self.seen.reshape(shape), self.observed.reshape(shape))


# -- normal map --------------------------------------------------------------------------------------------


def _encode_normals(tex: Texels, hit: SurfaceHit) -> np.ndarray:
    """(T, 3) uint8: the dense normals at `hit` in the texels' tangent frames, glTF-encoded."""
    return _tangent_space(hit.normals, tex.tangents, tex.bitangents, tex.normals)


@numba.njit(cache=True, nogil=True)
def _tangent_space(normals, tangents, bitangents, frame_normals):
    """Each normal in its (tangent, bitangent, normal) frame, made unit (a zero one stays zero), as
    round((x * 0.5 + 0.5) * 255) per axis."""
    out = np.empty((len(normals), 3), np.uint8)
    for i in range(len(normals)):
        x, y, z = 0.0, 0.0, 0.0
        for k in range(3):
            n = np.float64(normals[i, k])
            x += n * tangents[i, k]
            y += n * bitangents[i, k]
            z += n * frame_normals[i, k]
        length = np.sqrt(x * x + y * y + z * z)
        scale = 1.0 / length if length > 0.0 else 1.0
        for k, value in ((0, x), (1, y), (2, z)):
            out[i, k] = np.uint8(min(max((value * scale * 0.5 + 0.5) * 255.0 + 0.5, 0.0), 255.0))
    return out


def bake_normal_map(tex: Texels, hit: SurfaceHit) -> np.ndarray:
    """(S, S, 3) uint8 tangent-space normal map of the dense normals at `hit` (one hit per texel)."""
    image = _TexelImage(tex.size)
    image.put(tex.index, _encode_normals(tex, hit))
    return image.finish(_nearest_covered(tex.covered))


# -- albedo ------------------------------------------------------------------------------------------------


@dataclass
class AlbedoBake:
    image: np.ndarray  # (S, S, 3) uint8 sRGB, gutter filled
    seen: np.ndarray  # (S, S) bool: coloured from the frames (the rest from the dense vertex colours)
    observed: np.ndarray  # (S, S) bool: seen by at least one observed (not synthesised) pixel


class _Views:
    """The walkthrough's cameras as the albedo gather reads them."""

    def __init__(self, walk: Walkthrough) -> None:
        path = walk.path
        self.walk = walk
        self.w2c = np.ascontiguousarray(path.w2c[:, :3, :], np.float64)
        self.intrinsics = np.ascontiguousarray(path.K[:, [0, 1, 0, 1], [0, 1, 2, 2]], np.float64)  # fx fy cx cy
        self.centres = np.ascontiguousarray(path.centres, np.float64)
        self.far = walk.depth.reshape(len(walk), -1).max(axis=1).astype(np.float64)

    def colour(self, hit: SurfaceHit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(uint8 sRGB colour, seen by a frame, seen by an observed pixel) of each hit point."""
        walk = self.walk
        colour, weight, observed_weight = _gather(
            hit.points, hit.normals.astype(np.float64), walk.frames, walk.depth, walk.observed, self.w2c,
            self.intrinsics, self.centres, self.far, SRGB_TO_LINEAR, SYNTHESISED_WEIGHT, MIN_VIEW_COSINE,
            DEPTH_TOLERANCE_M, DEPTH_TOLERANCE_RELATIVE, BLOCK_TEXELS, MAX_VIEWS)
        seen = weight > 0
        linear = np.where(seen[:, None], colour / np.maximum(weight, 1e-30)[:, None], hit.colours)
        return to_srgb8(linear), seen, observed_weight > 0


def bake_albedo(tex: Texels, hit: SurfaceHit, walk: Walkthrough) -> AlbedoBake:
    """Colour every covered texel from the frames that see its dense-surface point."""
    image = _AlbedoImage(tex.size)
    image.put(tex.index, *_Views(walk).colour(hit))
    return image.finish(_nearest_covered(tex.covered))


@numba.njit(cache=True, nogil=True, fastmath=True)
def _gather(points, normals, frames, depth, observed, w2c, intrinsics, centres, far, lut, synthesised_weight,
            min_cosine, tol_abs, tol_rel, block, max_views):
    """Weighted sum of linear colour over the frames that see each point; weight = cos^2 / z^2 (the
    pixels the surface covers, cos / z^2, times cos again to favour frontal views).

    Points go in blocks of spatial neighbours, and each block uses the max_views frames that see it best
    (see `_best_views`): consecutive frames of a walkthrough see much the same, and the few best views
    carry nearly all the weight, while every frame more costs as much as the first.
    """
    n = len(points)
    height, width = depth.shape[1:]
    colour = np.zeros((n, 3))
    weight = np.zeros(n)
    observed_weight = np.zeros(n)
    for blk in range((n + block - 1) // block):
        start, stop = blk * block, min(n, (blk + 1) * block)
        views = _best_views(points[start:stop], normals[start:stop], depth, w2c, intrinsics, centres, far,
                            min_cosine, tol_abs, tol_rel, max_views)
        for f in views:
            for i in range(start, stop):
                px, py, pz = points[i, 0], points[i, 1], points[i, 2]
                z = w2c[f, 2, 0] * px + w2c[f, 2, 1] * py + w2c[f, 2, 2] * pz + w2c[f, 2, 3]
                if z <= 1e-3:
                    continue
                x = w2c[f, 0, 0] * px + w2c[f, 0, 1] * py + w2c[f, 0, 2] * pz + w2c[f, 0, 3]
                y = w2c[f, 1, 0] * px + w2c[f, 1, 1] * py + w2c[f, 1, 2] * pz + w2c[f, 1, 3]
                u = intrinsics[f, 0] * x / z + intrinsics[f, 2]
                v = intrinsics[f, 1] * y / z + intrinsics[f, 3]
                # Bilinear taps need the pixel centres around (u, v): stay half a pixel inside the image.
                if not (0.5 <= u <= width - 0.5 and 0.5 <= v <= height - 0.5):
                    continue
                dx, dy, dz = centres[f, 0] - px, centres[f, 1] - py, centres[f, 2] - pz
                cosine = (normals[i, 0] * dx + normals[i, 1] * dy + normals[i, 2] * dz) / np.sqrt(
                    dx * dx + dy * dy + dz * dz)
                if cosine < min_cosine:
                    continue
                tol = tol_abs + tol_rel * z
                row, col = int(v), int(u)
                d = depth[f, row, col]
                if d <= 0.0 or abs(d - z) > tol:
                    continue
                # Bilinear over the neighbouring pixel centres that show the same surface (depth agrees),
                # so an occluding edge does not bleed into the colour.
                gx, gy = u - 0.5, v - 0.5
                c0, r0 = min(int(gx), width - 2), min(int(gy), height - 2)
                fx, fy = gx - c0, gy - r0
                r, g, b, wsum = 0.0, 0.0, 0.0, 0.0
                for k in range(4):
                    rr, cc = r0 + k // 2, c0 + k % 2
                    wk = (fx if k % 2 else 1.0 - fx) * (fy if k // 2 else 1.0 - fy)
                    dk = depth[f, rr, cc]
                    if wk <= 0.0 or dk <= 0.0 or abs(dk - z) > tol:
                        continue
                    r += wk * lut[frames[f, rr, cc, 0]]
                    g += wk * lut[frames[f, rr, cc, 1]]
                    b += wk * lut[frames[f, rr, cc, 2]]
                    wsum += wk
                if wsum <= 0.0:
                    continue
                w = cosine * cosine / (z * z)
                if observed[f, row, col]:
                    observed_weight[i] += w
                else:
                    w *= synthesised_weight
                w_norm = w / wsum
                colour[i, 0] += r * w_norm
                colour[i, 1] += g * w_norm
                colour[i, 2] += b * w_norm
                weight[i] += w
    return colour, weight, observed_weight


@numba.njit(cache=True)
def _best_views(points, normals, depth, w2c, intrinsics, centres, far, min_cosine, tol_abs, tol_rel, max_views):
    """The frames (at most max_views) that see a block of points best: score cos^2 / z^2 at the block's
    centre with its mean normal; frames whose view misses the block's bounding sphere are out, and
    frames whose depth at the centre disagrees (occluded there) come after every clear view."""
    n_frames, height, width = depth.shape
    centre = np.zeros(3)
    normal = np.zeros(3)
    for i in range(len(points)):
        for k in range(3):
            centre[k] += points[i, k] / len(points)
            normal[k] += normals[i, k]
    normal /= max(np.sqrt(normal[0] ** 2 + normal[1] ** 2 + normal[2] ** 2), 1e-12)
    radius = 0.0
    for i in range(len(points)):
        radius = max(radius, np.sqrt((points[i, 0] - centre[0]) ** 2 + (points[i, 1] - centre[1]) ** 2
                                     + (points[i, 2] - centre[2]) ** 2))
    score = np.full(n_frames, -1.0)
    for f in range(n_frames):
        reach = far[f] + tol_abs + tol_rel * far[f]
        if not _sphere_in_view(w2c[f], intrinsics[f], width, height, reach, centre[0], centre[1], centre[2],
                               radius):
            continue
        d = centres[f] - centre
        dist = max(np.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2), 1e-6)
        cosine = max((normal[0] * d[0] + normal[1] * d[1] + normal[2] * d[2]) / dist, min_cosine)
        score[f] = cosine * cosine / (dist * dist)
        z = w2c[f, 2, 0] * centre[0] + w2c[f, 2, 1] * centre[1] + w2c[f, 2, 2] * centre[2] + w2c[f, 2, 3]
        if z > 1e-3:
            x = w2c[f, 0, 0] * centre[0] + w2c[f, 0, 1] * centre[1] + w2c[f, 0, 2] * centre[2] + w2c[f, 0, 3]
            y = w2c[f, 1, 0] * centre[0] + w2c[f, 1, 1] * centre[1] + w2c[f, 1, 2] * centre[2] + w2c[f, 1, 3]
            u = intrinsics[f, 0] * x / z + intrinsics[f, 2]
            v = intrinsics[f, 1] * y / z + intrinsics[f, 3]
            clear = 0.0 <= u < width and 0.0 <= v < height and (
                abs(depth[f, int(v), int(u)] - z) <= tol_abs + tol_rel * z + radius)
            if clear:
                score[f] += 1e6  # a clear view of the centre ranks above any partial one
    # The best first, picked one at a time: max_views is small, and a sort would cost seconds to compile.
    chosen = np.empty(min(max_views, n_frames), np.int64)
    count = 0
    while count < len(chosen):
        best = np.argmax(score)
        if score[best] < 0.0:
            break
        chosen[count] = best
        score[best] = -1.0
        count += 1
    return chosen[:count]


@numba.njit(cache=True, inline="always")
def _sphere_in_view(w2c, intrinsics, width, height, far, x, y, z, radius):
    """Whether a sphere may reach inside a frame's view frustum (between the camera and `far`)."""
    fx, fy, cx, cy = intrinsics[0], intrinsics[1], intrinsics[2], intrinsics[3]
    cam_x = w2c[0, 0] * x + w2c[0, 1] * y + w2c[0, 2] * z + w2c[0, 3]
    cam_y = w2c[1, 0] * x + w2c[1, 1] * y + w2c[1, 2] * z + w2c[1, 3]
    cam_z = w2c[2, 0] * x + w2c[2, 1] * y + w2c[2, 2] * z + w2c[2, 3]
    if cam_z < -radius or cam_z - radius > far:
        return False
    # Signed distances to the four side planes through the camera centre (positive inside).
    if (fx * cam_x + cx * cam_z) / np.sqrt(fx * fx + cx * cx) < -radius:
        return False
    if ((width - cx) * cam_z - fx * cam_x) / np.sqrt(fx * fx + (width - cx) ** 2) < -radius:
        return False
    if (fy * cam_y + cy * cam_z) / np.sqrt(fy * fy + cy * cy) < -radius:
        return False
    return ((height - cy) * cam_z - fy * cam_y) / np.sqrt(fy * fy + (height - cy) ** 2) >= -radius


# -- gutter ------------------------------------------------------------------------------------------------


def fill_gutter(image: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Every uncovered texel takes the value of the nearest covered one (all the way out, not just the
    padding, so every mip level stays clean)."""
    nearest = _nearest_covered(covered)
    if nearest is not None:
        flat = image.reshape(covered.size, -1)
        flat[nearest[0]] = flat[nearest[1]]
    return image


def _nearest_covered(covered: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(uncovered texels, the nearest covered texel of each), flat indices; None if there is nothing to
    fill. Computed once per level and shared by its normal map and albedo."""
    if covered.all() or not covered.any():
        return None
    empty = (~covered).astype(np.uint8)  # distance transform measures the way to the nearest zero
    # only the labels are kept (not the distances), and indices as int32: at 4096² these are the bake's
    # largest arrays
    labels = cv2.distanceTransformWithLabels(empty, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)[1].ravel()
    holes = np.flatnonzero(empty.ravel()).astype(np.int32)
    sources = np.flatnonzero(covered.ravel()).astype(np.int32)  # labels count these in raster order from 1
    return holes, sources[labels[holes] - 1]
