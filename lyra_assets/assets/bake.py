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

from dataclasses import dataclass

import cv2
import igl
import meshoptimizer
import numba
import numpy as np
import trimesh

from ..walkthrough import Walkthrough

SYNTHESISED_WEIGHT = 0.1  # a synthesised pixel's say relative to an observed one
MIN_VIEW_COSINE = 0.1  # frames seeing the surface more grazing than ~84 degrees give no colour
# A frame sees a point if its depth there agrees with the point's depth to within this much: fusion's
# surface sits within a voxel or two of the depth maps, and depth errors grow with distance.
DEPTH_TOLERANCE_M = 0.03
DEPTH_TOLERANCE_RELATIVE = 0.02
MAX_GRID_CELLS = 8_000_000  # the dense surface's triangle grid: 64 MB of cell offsets at most
GRID_SHELLS = 3  # closest-point search: rings of cells searched before handing over to libigl
SORT_CELL_M = 0.1  # texels are processed in runs of about this cell size (see `texels`)
BLOCK_TEXELS = 512  # the albedo gather picks frames per block of this many (spatially sorted) texels
MAX_VIEWS = 8  # frames that colour one block, the best-seeing ones (`_gather`); on the 121-frame bench
#               room 8 views give 46.1 dB against 46.4 dB for 16, at half the time


# -- colour ------------------------------------------------------------------------------------------------


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 decoding of values in 0..1."""
    x = np.asarray(x, np.float64)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(np.asarray(x, np.float64), 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)


SRGB_TO_LINEAR = srgb_to_linear(np.arange(256) / 255.0).astype(np.float32)  # uint8 sRGB -> linear
# linear in 1/65535 steps -> uint8 sRGB: fine enough even where the curve is steepest (12.92 near black:
# 0.05 of a code per step), and a table lookup instead of a power per value.
_LINEAR_TO_SRGB8 = np.clip(linear_to_srgb(np.arange(65536) / 65535.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _to_srgb8(linear: np.ndarray) -> np.ndarray:
    return _LINEAR_TO_SRGB8[np.clip(linear * 65535.0 + 0.5, 0, 65535).astype(np.uint16)]


# -- closest points -------------------------------------------------------------------------------------------


@dataclass
class SurfaceHit:
    """Closest points on a mesh, with what the mesh holds there."""

    points: np.ndarray  # (P, 3) float64
    normals: np.ndarray  # (P, 3) float32 unit: interpolated vertex normals
    colours: np.ndarray  # (P, 3) float32 linear RGB: interpolated vertex colours
    distances: np.ndarray  # (P,) float64 metres from the query points


class Surface:
    """Exact closest-point queries on a triangle mesh (the dense one, mostly), with what it holds there.

    Triangles are filed in a uniform grid of cells about one edge wide (each in every cell its bounding
    box touches). A query searches shells of cells around its own, nearest first, skipping cells farther
    than the best triangle so far; a texel on or near the surface settles within its own cell. A point
    farther than GRID_SHELLS cells from every triangle goes to libigl's AABB tree instead.
    """

    def __init__(self, mesh: trimesh.Trimesh):
        self.vertices = np.ascontiguousarray(mesh.vertices, np.float64)
        self.faces = np.ascontiguousarray(mesh.faces, np.int64)
        self.normals = vertex_normals(self.vertices, self.faces)
        self.colours = SRGB_TO_LINEAR[_vertex_rgb(mesh)]
        edges = self.vertices[self.faces[:, 1]] - self.vertices[self.faces[:, 0]]
        self.cell = max(float(np.median(np.linalg.norm(edges, axis=1))), 1e-6)
        self.origin = self.vertices.min(axis=0)
        extent = self.vertices.max(axis=0) - self.origin
        while np.prod(np.floor(extent / self.cell) + 1) > MAX_GRID_CELLS:
            self.cell *= 1.25
        self.dims = (np.floor(extent / self.cell) + 1).astype(np.int64)
        self.cell_start, self.cell_faces = _file_triangles(self.vertices, self.faces, self.origin, self.cell,
                                                           self.dims)
        self._tree: igl.AABB | None = None  # for far queries, built on first need

    def closest(self, points: np.ndarray) -> SurfaceHit:
        points = np.ascontiguousarray(points, np.float64)
        face, bary = _grid_closest(points, self.vertices, self.faces, self.origin, self.cell, self.dims,
                                   self.cell_start, self.cell_faces, GRID_SHELLS)
        far = np.flatnonzero(face < 0)
        if len(far):
            face[far], bary[far] = self._tree_closest(points[far])
        corners = self.faces[face]
        hit = _interpolate(bary, corners, self.vertices)
        normals = _unit(_interpolate(bary, corners, self.normals))
        colours = _interpolate(bary, corners, self.colours)
        return SurfaceHit(hit, normals.astype(np.float32), colours.astype(np.float32),
                          np.linalg.norm(hit - points, axis=1))

    def _tree_closest(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._tree is None:
            self._tree = igl.AABB()
            self._tree.init(self.vertices, self.faces)
        _, face, closest = self._tree.squared_distance(self.vertices, self.faces, points)
        face = np.asarray(face, np.int64).ravel()
        return face, _barycentrics(closest, self.vertices[self.faces[face]])


def _barycentrics(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(P, 3) barycentric coordinates of points lying in triangles (P, 3, 3)."""
    a, b, c = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    v0, v1, v2 = b - a, c - a, points - a
    d00, d01, d11 = (v0 * v0).sum(1), (v0 * v1).sum(1), (v1 * v1).sum(1)
    d20, d21 = (v2 * v0).sum(1), (v2 * v1).sum(1)
    denom = d00 * d11 - d01 * d01
    safe = np.where(np.abs(denom) > 0, denom, 1.0)
    v = np.where(np.abs(denom) > 0, (d11 * d20 - d01 * d21) / safe, 0.0)
    w = np.where(np.abs(denom) > 0, (d00 * d21 - d01 * d20) / safe, 0.0)
    return np.column_stack([1.0 - v - w, v, w])


@numba.njit(cache=True)
def _file_triangles(vertices, faces, origin, cell, dims):
    """CSR lists of the triangles whose bounding box touches each grid cell: (start (cells + 1,), faces)."""
    start = np.zeros(dims[0] * dims[1] * dims[2] + 1, np.int64)
    for f in range(len(faces)):  # count per cell
        lo, hi = _cell_range(vertices, faces[f], origin, cell, dims)
        for i in range(lo[0], hi[0] + 1):
            for j in range(lo[1], hi[1] + 1):
                for k in range(lo[2], hi[2] + 1):
                    start[(i * dims[1] + j) * dims[2] + k + 1] += 1
    for i in range(len(start) - 1):
        start[i + 1] += start[i]
    filled = start[:-1].copy()
    out = np.empty(start[-1], np.int64)
    for f in range(len(faces)):  # then file
        lo, hi = _cell_range(vertices, faces[f], origin, cell, dims)
        for i in range(lo[0], hi[0] + 1):
            for j in range(lo[1], hi[1] + 1):
                for k in range(lo[2], hi[2] + 1):
                    key = (i * dims[1] + j) * dims[2] + k
                    out[filled[key]] = f
                    filled[key] += 1
    return start, out


@numba.njit(cache=True, inline="always")
def _cell_range(vertices, face, origin, cell, dims):
    lo, hi = np.empty(3, np.int64), np.empty(3, np.int64)
    for k in range(3):
        a, b, c = vertices[face[0], k], vertices[face[1], k], vertices[face[2], k]
        lo[k] = min(max(int((min(a, b, c) - origin[k]) / cell), 0), dims[k] - 1)
        hi[k] = min(max(int((max(a, b, c) - origin[k]) / cell), 0), dims[k] - 1)
    return lo, hi


@numba.njit(parallel=True, cache=True)
def _grid_closest(points, vertices, faces, origin, cell, dims, cell_start, cell_faces, shells):
    """Closest triangle and barycentrics per point; face -1 where the answer is not certain (nothing
    within `shells` cells: a closer triangle could lie beyond the cells searched)."""
    n = len(points)
    face_out = np.full(n, -1, np.int64)
    bary_out = np.zeros((n, 3))
    for i in numba.prange(n):
        q = (points[i, 0], points[i, 1], points[i, 2])
        ci = int(np.floor((q[0] - origin[0]) / cell))
        cj = int(np.floor((q[1] - origin[1]) / cell))
        ck = int(np.floor((q[2] - origin[2]) / cell))
        best, best_face = np.inf, -1
        b0, b1, b2 = 0.0, 0.0, 0.0
        for s in range(shells + 1):
            if s > 0 and best <= ((s - 1) * cell) ** 2:
                break  # every cell of shell s is at least (s - 1) cells away
            for a in range(max(ci - s, 0), min(ci + s + 1, dims[0])):
                for b in range(max(cj - s, 0), min(cj + s + 1, dims[1])):
                    for c in range(max(ck - s, 0), min(ck + s + 1, dims[2])):
                        if max(abs(a - ci), abs(b - cj), abs(c - ck)) != s:
                            continue
                        if _box_distance2(q, origin, cell, a, b, c) >= best:
                            continue
                        key = (a * dims[1] + b) * dims[2] + c
                        for r in range(cell_start[key], cell_start[key + 1]):
                            f = cell_faces[r]
                            va, vb, vc = faces[f, 0], faces[f, 1], faces[f, 2]
                            pa = (vertices[va, 0], vertices[va, 1], vertices[va, 2])
                            pb = (vertices[vb, 0], vertices[vb, 1], vertices[vb, 2])
                            pc = (vertices[vc, 0], vertices[vc, 1], vertices[vc, 2])
                            wa, wb, wc = _closest_on_triangle(q, pa, pb, pc)
                            d = 0.0
                            for k in range(3):
                                e = wa * pa[k] + wb * pb[k] + wc * pc[k] - q[k]
                                d += e * e
                            if d < best:
                                best, best_face = d, f
                                b0, b1, b2 = wa, wb, wc
        if best <= (shells * cell) ** 2:  # nothing beyond the shells searched can be closer
            face_out[i] = best_face
            bary_out[i, 0], bary_out[i, 1], bary_out[i, 2] = b0, b1, b2
    return face_out, bary_out


@numba.njit(cache=True, inline="always")
def _box_distance2(q, origin, cell, a, b, c):
    d = 0.0
    for k, index in ((0, a), (1, b), (2, c)):
        lo = origin[k] + index * cell
        e = max(lo - q[k], 0.0, q[k] - lo - cell)
        d += e * e
    return d


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) float32 area-weighted unit vertex normals; vertices at the same position (copies made at UV
    seams) share one normal, so shading is continuous across seams."""
    vertices = np.asarray(vertices, np.float64)
    faces = np.asarray(faces, np.int64)
    welded = weld(vertices)
    p = vertices[faces]
    face_normals = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])  # length = twice the area
    corners = welded[faces].ravel()
    acc = np.stack([np.bincount(corners, np.repeat(face_normals[:, k], 3), welded.max() + 1)
                    for k in range(3)], axis=1)
    norm = np.linalg.norm(acc, axis=1, keepdims=True)
    unit = np.where(norm > 0, acc / np.where(norm > 0, norm, 1.0), [[0.0, 0.0, 1.0]])
    return unit[welded].astype(np.float32)


def weld(vertices: np.ndarray) -> np.ndarray:
    """(V,) int64 ids 0 .. n - 1, equal for vertices at the same position (as float32), numbered in order
    of first appearance: meshoptimizer's vertex remap, a hash table rather than a sort."""
    positions = np.ascontiguousarray(vertices, np.float32)
    remap = np.empty(len(positions), np.uint32)
    meshoptimizer.generate_vertex_remap(remap, np.arange(len(positions), dtype=np.uint32), vertices=positions)
    return remap.astype(np.int64)


def _vertex_rgb(mesh: trimesh.Trimesh) -> np.ndarray:
    colours = getattr(mesh.visual, "vertex_colors", None)
    if colours is None or len(colours) != len(mesh.vertices):
        return np.full((len(mesh.vertices), 3), 128, np.uint8)  # no colour at all: mid grey
    return np.asarray(colours)[:, :3].astype(np.uint8)


@numba.njit(cache=True, inline="always")
def _dot(x, y):
    return x[0] * y[0] + x[1] * y[1] + x[2] * y[2]


@numba.njit(cache=True, inline="always")
def _sub(x, y):
    return (x[0] - y[0], x[1] - y[1], x[2] - y[2])


@numba.njit(cache=True, inline="always")
def _closest_on_triangle(p, a, b, c):
    """Barycentric weights of the point of triangle abc closest to p (Ericson, Real-Time Collision
    Detection, 5.1.5): the Voronoi regions of the vertices, then of the edges, then the face.
    Points are tuples: scalar code, no temporary arrays in the inner loop."""
    ab, ac, ap = _sub(b, a), _sub(c, a), _sub(p, a)
    d1, d2 = _dot(ab, ap), _dot(ac, ap)
    if d1 <= 0.0 and d2 <= 0.0:
        return 1.0, 0.0, 0.0
    bp = _sub(p, b)
    d3, d4 = _dot(ab, bp), _dot(ac, bp)
    if d3 >= 0.0 and d4 <= d3:
        return 0.0, 1.0, 0.0
    vc = d1 * d4 - d3 * d2
    if vc <= 0.0 and d1 >= 0.0 and d3 <= 0.0:
        t = d1 / (d1 - d3)
        return 1.0 - t, t, 0.0
    cp = _sub(p, c)
    d5, d6 = _dot(ab, cp), _dot(ac, cp)
    if d6 >= 0.0 and d5 <= d6:
        return 0.0, 0.0, 1.0
    vb = d5 * d2 - d1 * d6
    if vb <= 0.0 and d2 >= 0.0 and d6 <= 0.0:
        t = d2 / (d2 - d6)
        return 1.0 - t, 0.0, t
    va = d3 * d6 - d5 * d4
    if va <= 0.0 and (d4 - d3) >= 0.0 and (d5 - d6) >= 0.0:
        t = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        return 0.0, 1.0 - t, t
    if va + vb + vc == 0.0:  # degenerate triangle: its first corner is as good as any
        return 1.0, 0.0, 0.0
    denom = 1.0 / (va + vb + vc)
    v, w = vb * denom, vc * denom
    return 1.0 - v - w, v, w


def _interpolate(bary: np.ndarray, corners: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(P, D) float64 barycentric blend of per-vertex values at the three corners of each point's triangle."""
    return _blend(bary, corners, np.ascontiguousarray(values))


@numba.njit(parallel=True, cache=True)
def _blend(bary, corners, values):
    out = np.empty((len(bary), values.shape[1]))
    for i in numba.prange(len(bary)):
        for d in range(values.shape[1]):
            out[i, d] = (bary[i, 0] * values[corners[i, 0], d] + bary[i, 1] * values[corners[i, 1], d]
                         + bary[i, 2] * values[corners[i, 2], d])
    return out


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


def texels(vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray, tangents: np.ndarray,
           uv: np.ndarray, size: int) -> Texels:
    """Rasterise the level's triangles in UV space and interpolate its vertex data at texel centres.

    Texels come grouped by triangle, triangles sorted by where they lie in space (SORT_CELL_M cells), so
    that later per-texel work reads the dense mesh and the frames in coherent runs instead of jumping
    across the scene.
    """
    faces = np.ascontiguousarray(faces, np.int64)
    vertices = np.ascontiguousarray(vertices, np.float64)
    face_map, bary_map = _rasterise(np.ascontiguousarray(uv, np.float64) * size, faces, size)
    face_map, bary_map = face_map.ravel(), bary_map.reshape(-1, 2)
    rank = np.empty(len(faces), np.int64)
    rank[_spatial_order(vertices[faces].mean(axis=1))] = np.arange(len(faces))
    index = _group_by_rank(face_map, rank)
    corners, bary = faces[face_map[index]], _full_barycentrics(bary_map[index])
    points, n, t, b = _texel_frames(bary, corners, vertices, np.asarray(normals, np.float64),
                                    np.asarray(tangents, np.float64))
    return Texels(size, index, points, n, t, b)


def _full_barycentrics(b12: np.ndarray) -> np.ndarray:
    b12 = b12.astype(np.float64)
    return np.column_stack([1.0 - b12[:, 0] - b12[:, 1], b12])


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


@numba.njit(parallel=True, cache=True)
def _texel_frames(bary, corners, vertices, normals, tangents):
    """Point, unit normal, unit tangent (made orthogonal to the normal) and bitangent
    (handedness * cross(normal, tangent), as a glTF shader builds it) at each texel centre."""
    n = len(bary)
    points, out_n = np.empty((n, 3)), np.empty((n, 3))
    out_t, out_b = np.empty((n, 3)), np.empty((n, 3))
    for i in numba.prange(n):
        a, b, c = corners[i, 0], corners[i, 1], corners[i, 2]
        w0, w1, w2 = bary[i, 0], bary[i, 1], bary[i, 2]
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
    """Per texel: the covering face (-1: none) and barycentrics (b1, b2) of its centre in that face."""
    face_map = np.full((size, size), -1, np.int32)
    bary_map = np.zeros((size, size, 2), np.float32)
    for f in range(len(faces)):
        x0, y0 = uv_px[faces[f, 0], 0], uv_px[faces[f, 0], 1]
        x1, y1 = uv_px[faces[f, 1], 0], uv_px[faces[f, 1], 1]
        x2, y2 = uv_px[faces[f, 2], 0], uv_px[faces[f, 2], 1]
        area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        if area == 0.0:
            continue
        inv = 1.0 / area
        c0 = max(int(np.floor(min(x0, x1, x2) - 0.5)), 0)
        c1 = min(int(np.ceil(max(x0, x1, x2) - 0.5)), size - 1)
        r0 = max(int(np.floor(min(y0, y1, y2) - 0.5)), 0)
        r1 = min(int(np.ceil(max(y0, y1, y2) - 0.5)), size - 1)
        for row in range(r0, r1 + 1):
            py = row + 0.5
            for col in range(c0, c1 + 1):
                px = col + 0.5
                # Barycentrics from signed areas; either winding in UV space (charts may be mirrored).
                b1 = ((px - x0) * (y2 - y0) - (x2 - x0) * (py - y0)) * inv
                b2 = ((x1 - x0) * (py - y0) - (px - x0) * (y1 - y0)) * inv
                if b1 >= 0.0 and b2 >= 0.0 and b1 + b2 <= 1.0:
                    face_map[row, col] = f
                    bary_map[row, col, 0] = b1
                    bary_map[row, col, 1] = b2
    return face_map, bary_map


# -- normal map --------------------------------------------------------------------------------------------


def bake_normal_map(tex: Texels, hit: SurfaceHit) -> np.ndarray:
    """(S, S, 3) uint8 tangent-space normal map of the dense normals at `hit` (one hit per texel)."""
    n = hit.normals.astype(np.float64)
    local = np.stack([np.sum(n * tex.tangents, axis=1), np.sum(n * tex.bitangents, axis=1),
                      np.sum(n * tex.normals, axis=1)], axis=1)
    encoded = np.clip((_unit(local) * 0.5 + 0.5) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    image = np.zeros((tex.size * tex.size, 3), np.uint8)
    image[tex.index] = encoded
    return fill_gutter(image.reshape(tex.size, tex.size, 3), tex.covered)


# -- albedo ------------------------------------------------------------------------------------------------


@dataclass
class AlbedoBake:
    image: np.ndarray  # (S, S, 3) uint8 sRGB, gutter filled
    seen: np.ndarray  # (S, S) bool: coloured from the frames (the rest from the dense vertex colours)
    observed: np.ndarray  # (S, S) bool: seen by at least one observed (not synthesised) pixel


def bake_albedo(tex: Texels, hit: SurfaceHit, walk: Walkthrough) -> AlbedoBake:
    """Colour every covered texel from the frames that see its dense-surface point."""
    path = walk.path
    w2c = np.ascontiguousarray(path.w2c[:, :3, :], np.float64)
    intrinsics = np.ascontiguousarray(path.K[:, [0, 1, 0, 1], [0, 1, 2, 2]], np.float64)  # fx fy cx cy
    far = walk.depth.reshape(len(walk), -1).max(axis=1).astype(np.float64)
    colour, weight, observed_weight = _gather(
        hit.points, hit.normals.astype(np.float64), walk.frames, walk.depth, walk.observed, w2c, intrinsics,
        np.ascontiguousarray(path.centres, np.float64), far, SRGB_TO_LINEAR, SYNTHESISED_WEIGHT,
        MIN_VIEW_COSINE, DEPTH_TOLERANCE_M, DEPTH_TOLERANCE_RELATIVE, BLOCK_TEXELS, MAX_VIEWS)
    seen = weight > 0
    linear = np.where(seen[:, None], colour / np.maximum(weight, 1e-30)[:, None], hit.colours)
    size = tex.size
    image = np.zeros((size * size, 3), np.uint8)
    image[tex.index] = _to_srgb8(linear)
    seen_map = np.zeros(size * size, bool)
    seen_map[tex.index] = seen
    observed_map = np.zeros(size * size, bool)
    observed_map[tex.index] = observed_weight > 0
    return AlbedoBake(fill_gutter(image.reshape(size, size, 3), tex.covered), seen_map.reshape(size, size),
                      observed_map.reshape(size, size))


@numba.njit(parallel=True, cache=True, fastmath=True)
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
    for blk in numba.prange((n + block - 1) // block):
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
    order = np.argsort(-score)
    count = 0
    while count < min(max_views, n_frames) and score[order[count]] >= 0.0:
        count += 1
    return order[:count]


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
    if covered.all() or not covered.any():
        return image
    empty = (~covered).astype(np.uint8)  # distance transform measures the way to the nearest zero
    _, labels = cv2.distanceTransformWithLabels(empty, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    sources = np.flatnonzero(covered.ravel())  # labels number the zero pixels in raster order from 1
    flat = image.reshape(covered.size, -1)
    holes = np.flatnonzero(~covered.ravel())
    flat[holes] = flat[sources[labels.ravel()[holes] - 1]]
    return image


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)
