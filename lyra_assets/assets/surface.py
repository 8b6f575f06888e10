"""Surface queries on a triangle mesh: exact closest points with the normal and colour there, vertex normals
and welding. The bake and the LOD errors both ask the dense mesh "what lies closest to this point?".
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import igl
import meshoptimizer
import numba
import numpy as np
import trimesh

from .colour import SRGB_TO_LINEAR
from .geometry import face_normals

MAX_GRID_CELLS = 8_000_000  # the triangle grid: 64 MB of cell offsets at most
GRID_SHELLS = 3  # closest-point search: rings of cells searched before handing over to libigl


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
        # float64 like the vertices, so the one blend kernel compiles once
        self.normals = vertex_normals(self.vertices, self.faces).astype(np.float64)
        self.colours = SRGB_TO_LINEAR[_vertex_rgb(mesh)].astype(np.float64)
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
        self._tree_lock = threading.Lock()  # the bake asks from several threads

    def closest(self, points: np.ndarray) -> SurfaceHit:
        points = np.ascontiguousarray(points, np.float64)
        face, bary = _grid_closest(points, self.vertices, self.faces, self.origin, self.cell, self.dims,
                                   self.cell_start, self.cell_faces, GRID_SHELLS)
        far = np.flatnonzero(face < 0)
        if len(far):
            face[far], bary[far] = self._tree_closest(points[far])
        return SurfaceHit(*_hits(points, face, bary, self.faces, self.vertices, self.normals, self.colours))

    def _tree_closest(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._tree_lock:
            if self._tree is None:
                tree = igl.AABB()
                tree.init(self.vertices, self.faces)
                self._tree = tree
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


@numba.njit(cache=True, nogil=True)  # the errors' grids are filed beside the bake's threads
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


@numba.njit(cache=True, nogil=True)  # serial: the bake runs its chunks in threads
def _grid_closest(points, vertices, faces, origin, cell, dims, cell_start, cell_faces, shells):
    """Closest triangle and barycentrics per point; face -1 where the answer is not certain (nothing
    within `shells` cells: a closer triangle could lie beyond the cells searched)."""
    n = len(points)
    face_out = np.full(n, -1, np.int64)
    bary_out = np.zeros((n, 3))
    for i in range(n):
        q = (points[i, 0], points[i, 1], points[i, 2])
        ci = int(np.floor((q[0] - origin[0]) / cell))
        cj = int(np.floor((q[1] - origin[1]) / cell))
        ck = int(np.floor((q[2] - origin[2]) / cell))
        best, best_face = np.inf, -1
        b0, b1, b2 = 0.0, 0.0, 0.0
        # q's distance to its own cell's sides: every cell of shell s is at least (s - 1) cells farther
        inside = np.inf
        for k, index in ((0, ci), (1, cj), (2, ck)):
            lo = origin[k] + index * cell
            inside = min(inside, q[k] - lo, lo + cell - q[k])
        inside = max(inside, 0.0)
        for s in range(shells + 1):
            if s > 0 and best <= ((s - 1) * cell + inside) ** 2:
                break  # no cell of shell s holds anything closer
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
                            if _box_gap2(q, pa, pb, pc) >= best:
                                continue  # the triangle's bounding box is no closer: nor is the triangle
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
def _box_gap2(q, pa, pb, pc):
    """Squared distance from q to the bounding box of triangle pa pb pc: a lower bound of its distance."""
    d = 0.0
    for k in range(3):
        e = max(min(pa[k], pb[k], pc[k]) - q[k], 0.0, q[k] - max(pa[k], pb[k], pc[k]))
        d += e * e
    return d


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
    normals = face_normals(vertices, faces)  # area-weighted: length = twice the area
    corners = welded[faces].ravel()
    acc = np.stack([np.bincount(corners, np.repeat(normals[:, k], 3), welded.max() + 1)
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


@numba.njit(cache=True, nogil=True)  # serial: the bake runs its chunks in threads
def _hits(points, face, bary, faces, vertices, normals, colours):
    """SurfaceHit's arrays in one pass (a dozen numpy passes over millions of texels took a third of the
    query's time): the blends of the corners' positions, unit normals and colours, and the distances."""
    n = len(points)
    hit, distance = np.empty((n, 3)), np.empty(n)
    normal, colour = np.empty((n, 3), np.float32), np.empty((n, 3), np.float32)
    for i in range(n):
        a, b, c = faces[face[i], 0], faces[face[i], 1], faces[face[i], 2]
        wa, wb, wc = bary[i, 0], bary[i, 1], bary[i, 2]
        norm2, gap2 = 0.0, 0.0
        for d in range(3):
            hit[i, d] = wa * vertices[a, d] + wb * vertices[b, d] + wc * vertices[c, d]
            gap2 += (hit[i, d] - points[i, d]) ** 2
            m = wa * normals[a, d] + wb * normals[b, d] + wc * normals[c, d]
            norm2 += m * m
            colour[i, d] = wa * colours[a, d] + wb * colours[b, d] + wc * colours[c, d]
        distance[i] = np.sqrt(gap2)
        length = np.sqrt(norm2) if norm2 > 0 else 1.0  # a zero normal stays zero
        for d in range(3):
            normal[i, d] = (wa * normals[a, d] + wb * normals[b, d] + wc * normals[c, d]) / length
    return hit, normal, colour, distance

