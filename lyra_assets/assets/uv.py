"""UV atlas: flat regions projected, the rest charted by xatlas chunk by chunk, all packed into one square
atlas; tangent frames from the UVs.

Large flat regions (walls, floors, ceilings: at least a chunk's worth of connected faces facing one way)
become one chart each, projected onto their plane: whole, undistorted, and rectangles that pack well.
xatlas' chart computation grows about as n^1.9 in the faces of one mesh (50k triangles: 46 s), so the rest
is cut into spatial chunks of about CHUNK_FACES faces first and each chunk is charted on its own (xatlas
charts the meshes of one atlas in parallel). Chunks are geodesic Voronoi regions around seeds spread by a
median split: a plain spatial split leaves single faces hanging off every chunk's jagged border, and xatlas
turns each of those into a chart of its own (measured: 3x the charts).

Packing is a second xatlas run on the charts alone (`add_uv_mesh`): first every chart is scaled to its
true surface area (xatlas enlarges tiny charts when it packs, so the first run's layout has no common
scale), then the texel density is chosen from the charts' areas and outlines so the padded charts fill one
size x size atlas; xatlas' packer is greedy, so a higher density is tried beside it and kept where it fits.
With a fixed resolution xatlas guarantees the padding in texels of the final
texture. xatlas holds the GIL for a whole pack, so on Linux each density is packed in a forked process, two
at a time (_packs): the asset stage's other thread runs meanwhile, and a density that overflows costs no
wait of its own.

Texture coordinates follow glTF: (0, 0) is the top-left texel and v grows downwards (row = v * size).
"""
from __future__ import annotations

import math
from collections import deque
from contextlib import closing
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import xatlas

from .. import forked
from ..errors import LyraAssetsError
from .geometry import face_normals, perpendicular, triangle_areas, unit

# At most this many faces per chunk (about 600 on average). bench/bench_assets.py, 20k triangles of a fused
# room: 1.2 s chunked against 14.7 s in one piece.
CHUNK_FACES = 1000
# Large flat regions (walls, floors) become one chart each, projected flat: chunks would cut them into
# ragged pieces that pack badly (bench/bench_assets.py: 0.52 of the atlas filled, against 0.7 with them).
PLANAR_DEGREES = 15.0  # a flat region's faces face its way within this: the projection shrinks areas <= 3.4 %
NORMAL_BINS = 16  # bins along each side of the cube-map histogram that finds the dominant ways
MAX_PLANES = 32  # dominant ways sought at most
CHART_GAP_M = 1.0  # between charts laid out for the packing run (any gap will do)
# Chart growing in one pass, without xatlas' seed-relocating iterations: half the time on fused rooms,
# about as many charts (measured 390 against 378 on a 150k-triangle LOD0).
CHART_ITERATIONS = 0
PACKING_EFFICIENCY = 0.62  # share of the atlas the padded charts get: xatlas fit them at 0.67, not 0.7
# The estimate fits (nearly) always, and often 9 % more density does too, but not reliably: xatlas' packer is
# greedy, so whether a density fits jumps about near the limit (LOD0 of the example's six presets, densities
# 1.125 to 0.995 of the estimate in 3 % steps: from one to four in a row overflowed before one fit). So the
# first two tries, packed side by side, are 9 % above the estimate and the estimate itself: one round of
# packing nearly always, where stepping down from 12.5 % above took up to three (0.6-0.7 s each on LOD0).
DENSITY_HEADROOM = 1.09
DENSITY_RETRY = 0.9  # then, if the charts still overflow one atlas, pack again at 90 % of the density
PACKING_TRIES = 12  # 0.9^12: down to 28 % of the estimate before giving up
PARALLEL_PACKS = 2  # densities packed at once, each in a process of its own (_packs)
STUCK_TRIES = 3  # ... or sooner, once this many lower densities in a row overflow as many atlas pages
# Small atlases (a low LOD's 64-256 px) may not hold the charts with their full gutters: try again with
# chunks this large (fewer, larger charts; charting time is no concern on the few faces of a low level),
# then with the gutter halved, down to 1 texel (bilinear filtering's minimum).
FEW_CHARTS_CHUNK_FACES = 4000


class AtlasFull(LyraAssetsError):
    """The charts do not fit one atlas of the size asked for."""


@dataclass
class Atlas:
    """A mesh split along chart borders, with texture coordinates in one square atlas."""

    vertices: np.ndarray  # (V, 3) float32: vertices duplicated where charts meet
    faces: np.ndarray  # (F, 3) uint32, the input faces in their input order
    uv: np.ndarray  # (V, 2) float32 in [0, 1], glTF convention
    source: np.ndarray  # (V,) int64: the input vertex each vertex was copied from
    size: int  # texels along each side of the texture the layout was packed for
    texels_per_metre: float  # texel density of the layout at `size`
    padding: int  # at least this many texels around every chart at `size`


def unwrap(vertices: np.ndarray, faces: np.ndarray, size: int, padding: int = 4,
           texels_per_metre: float | None = None, chunk_faces: int = CHUNK_FACES) -> Atlas:
    """Chart and pack a mesh into one size x size atlas.

    texels_per_metre: the density to pack at; None fills the atlas. A density whose charts do not fit is
    lowered until they do (the Atlas reports the density used).
    """
    return _Charts(vertices, faces, chunk_faces).pack(size, padding, texels_per_metre)


def unwrap_fitting(vertices: np.ndarray, faces: np.ndarray, size: int, padding: int = 4,
                   texels_per_metre: float | None = None, what: str = "the mesh") -> Atlas:
    """`unwrap`, and where the charts do not fit: fewer charts, then narrower gutters (module constants)."""
    try:
        return unwrap(vertices, faces, size, padding, texels_per_metre)
    except AtlasFull:
        pass
    charts = _Charts(vertices, faces, FEW_CHARTS_CHUNK_FACES)  # charted once, packed with each gutter
    while True:
        try:
            return charts.pack(size, padding, texels_per_metre)
        except AtlasFull:
            if padding == 1:
                break
            padding = max(1, padding // 2)
    raise AtlasFull(f"UV unwrap: {what} ({len(faces):,} triangles) does not fit one {size}x{size} atlas even "
                    f"with 1-texel gutters; use a larger --texture-size")


class _Charts:
    """A mesh split into charts, each scaled to its true size (metres), ready to pack at any size."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, chunk_faces: int) -> None:
        self.vertices = np.asarray(vertices, np.float64)
        faces = np.asarray(faces, np.int64)
        if len(faces) == 0:
            raise LyraAssetsError("UV unwrap: the mesh has no triangles")
        planes = _planar_regions(self.vertices, faces, chunk_faces)
        curved = planes < 0
        self.faces = np.empty_like(faces)
        pieces = []
        if curved.any():
            pieces.append((curved, *_charts(self.vertices, faces[curved],
                                            _chunk_labels(self.vertices, faces[curved], chunk_faces))))
        if not curved.all():
            pieces.append((~curved, *_planar_charts(self.vertices, faces[~curved], planes[~curved])))
        sources, uvs, offset = [], [], 0
        for members, source, split_faces, uv in pieces:
            self.faces[members] = split_faces + offset
            sources.append(source)
            uvs.append(uv)
            offset += len(source)
        self.source, chart_uv = np.concatenate(sources), np.concatenate(uvs)
        self.charts = _chart_ids(self.faces, len(self.source))
        self.uv = _to_metres(chart_uv, self.faces, self.vertices[self.source], self.charts)

    def pack(self, size: int, padding: int, texels_per_metre: float | None) -> Atlas:
        n_charts = int(self.charts.max()) + 1
        if n_charts * (padding + 1) ** 2 > size * size:  # even charts of one texel would overflow: say so now
            raise AtlasFull(f"UV unwrap: {n_charts:,} charts with {padding}-texel gutters cannot fit one "
                            f"{size}x{size} atlas; use a larger --texture-size")
        if texels_per_metre:
            # No denser than padded charts covering the whole atlas: above that nothing fits, and lowering
            # from far above took many tries, or gave up where steps in a row overflowed as many pages.
            density = min(texels_per_metre, _fill_density(self.uv, self.faces, self.charts, size, padding, 1.0))
            headroom = None
        else:
            density = _fill_density(self.uv, self.faces, self.charts, size, padding)
            headroom = DENSITY_HEADROOM
        packed_vertex, packed_faces, uv, density = _pack(self.uv, self.faces, size, padding, density, headroom)
        source = self.source[packed_vertex]
        return Atlas(self.vertices[source].astype(np.float32), packed_faces.astype(np.uint32),
                     uv.astype(np.float32), source, size, float(density), padding)


# -- charts ------------------------------------------------------------------------------------------------


def _planar_regions(vertices: np.ndarray, faces: np.ndarray, min_faces: int) -> np.ndarray:
    """(F,) flat region of each face, or -1: at least min_faces connected faces facing one way.

    The ways are the surface's dominant normals, found greedily: the mean normal of the fullest bin of a
    normal histogram claims the faces within PLANAR_DEGREES of it; repeat.
    """
    normals = face_normals(vertices, faces)
    area = np.linalg.norm(normals, axis=1)
    normals = unit(normals)
    near = math.cos(math.radians(PLANAR_DEGREES))
    # histogram bins (a cube map): the normal's major axis and side, and the two others' ratios to it
    rows = np.arange(len(faces))
    axis = np.argmax(np.abs(normals), axis=1)
    major = normals[rows, axis]
    side = np.where(major != 0, major, 1.0)  # a face without area has no normal: any bin, no weight
    ratio = [np.clip(((normals[rows, (axis + k) % 3] / side + 1) * NORMAL_BINS / 2).astype(int), 0, NORMAL_BINS - 1)
             for k in (1, 2)]
    cell = ((axis * 2 + (major > 0)) * NORMAL_BINS + ratio[0]) * NORMAL_BINS + ratio[1]
    way = np.full(len(faces), -1)
    for k in range(MAX_PLANES):
        free = way < 0
        weights = np.bincount(cell[free], area[free], 6 * NORMAL_BINS**2)
        peak = cell == np.argmax(weights)
        if not (peak & free).any():
            break
        direction = unit((normals[peak & free] * area[peak & free, None]).sum(axis=0))
        claimed = free & (normals @ direction >= near)
        if claimed.sum() < min_faces:
            break
        way[claimed] = k
    pairs = _face_adjacency(faces)
    pairs = pairs[(way[pairs[:, 0]] == way[pairs[:, 1]]) & (way[pairs[:, 0]] >= 0)]
    graph = scipy.sparse.coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])),
                                    shape=(len(faces),) * 2)
    n, region = scipy.sparse.csgraph.connected_components(graph, directed=False)
    flat = (np.bincount(region, minlength=n) >= min_faces)[region] & (way >= 0)
    return np.where(flat, region, -1)


def _planar_charts(vertices: np.ndarray, faces: np.ndarray, regions: np.ndarray) -> tuple[np.ndarray, ...]:
    """One chart per flat region, projected onto the plane of its mean normal (metres): like _charts."""
    normals = face_normals(vertices, faces)
    order = np.argsort(regions, kind="stable")
    bounds = np.flatnonzero(np.diff(regions[order])) + 1
    sources, split_faces, uvs = [], np.empty_like(faces), []
    offset = 0
    for members in np.split(order, bounds):
        used, local = np.unique(faces[members], return_inverse=True)
        normal = unit(normals[members].sum(axis=0))
        across = perpendicular(normal[None])[0]
        basis = np.stack([across, np.cross(normal, across)], axis=1)  # (u, v, normal) right-handed
        sources.append(used)
        split_faces[members] = local.reshape(-1, 3) + offset
        uvs.append(vertices[used] @ basis)
        offset += len(used)
    return np.concatenate(sources), split_faces, np.concatenate(uvs)


def _chunk_labels(vertices: np.ndarray, faces: np.ndarray, chunk_faces: int) -> np.ndarray:
    """(F,) chunk of each face: faces go to the seed nearest along the surface (geodesic Voronoi)."""
    centres = vertices[faces].mean(axis=1)
    leaves = _median_split(centres, chunk_faces)
    if len(leaves) == 1:
        return np.zeros(len(faces), np.int64)
    seeds = np.array([leaf[np.argmin(np.linalg.norm(centres[leaf] - centres[leaf].mean(0), axis=1))]
                      for leaf in leaves])
    pairs = _face_adjacency(faces)
    length = np.linalg.norm(centres[pairs[:, 0]] - centres[pairs[:, 1]], axis=1) + 1e-12
    graph = scipy.sparse.coo_matrix((length, (pairs[:, 0], pairs[:, 1])), shape=(len(faces),) * 2).tocsr()
    _, _, nearest_seed = scipy.sparse.csgraph.dijkstra(graph, directed=False, indices=seeds, min_only=True,
                                                       return_predecessors=True)
    seed_label = np.full(len(faces), -1, np.int64)
    seed_label[seeds] = np.arange(len(seeds))
    labels = np.where(nearest_seed >= 0, seed_label[np.maximum(nearest_seed, 0)], -1)
    # Pieces that no seed reaches (small islands) keep their median-split leaf: xatlas charts each
    # disconnected piece separately anyway.
    leaf_of = np.empty(len(faces), np.int64)
    for i, leaf in enumerate(leaves):
        leaf_of[leaf] = i
    return np.where(labels >= 0, labels, len(seeds) + leaf_of)


def _median_split(points: np.ndarray, most: int) -> list[np.ndarray]:
    """Index sets of at most `most` points: halve along the longest side until small enough."""
    out, stack = [], [np.arange(len(points))]
    while stack:
        idx = stack.pop()
        if len(idx) <= most:
            out.append(idx)
            continue
        p = points[idx]
        order = idx[np.argsort(p[:, np.argmax(np.ptp(p, axis=0))], kind="stable")]
        stack += [order[: len(idx) // 2], order[len(idx) // 2:]]
    return out


def _edge_keys(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(3F,) edges as sorted vertex pairs, and one int64 key per edge (same edge, same key)."""
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    return edges, edges[:, 0] * (int(faces.max()) + 1) + edges[:, 1]


def _face_adjacency(faces: np.ndarray) -> np.ndarray:
    """(E, 2) pairs of faces sharing an edge."""
    _, key = _edge_keys(faces)
    owner = np.repeat(np.arange(len(faces)), 3)
    order = np.argsort(key, kind="stable")
    key, owner = key[order], owner[order]
    same = np.flatnonzero(key[1:] == key[:-1])
    return np.stack([owner[same], owner[same + 1]], axis=1)


def _charts(vertices: np.ndarray, faces: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """xatlas charts per chunk: (source vertex, faces, chart-space UVs) of the mesh split at chart borders.

    Where forked.AVAILABLE, in a child process whose atlas is never destroyed (forked.keep: xatlas' destructor
    can hang); the asset stage's other thread also runs meanwhile, as xatlas holds the GIL while it charts."""
    if not forked.AVAILABLE:
        return _chart_chunks(vertices, faces, labels)
    child = forked.Forked(_chart_chunks, vertices, faces, labels)
    try:
        return child.result()
    finally:
        child.kill()  # only if interrupted before the result came: a finished child is reaped already


def _chart_chunks(vertices: np.ndarray, faces: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    atlas = forked.keep(xatlas.Atlas())
    chunk_faces, chunk_vertices = [], []
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    for members in np.split(order, bounds):
        used, local = np.unique(faces[members], return_inverse=True)
        atlas.add_mesh(vertices[used].astype(np.float32), local.reshape(-1, 3).astype(np.uint32))
        chunk_faces.append(members)
        chunk_vertices.append(used)
    charting = xatlas.ChartOptions()
    charting.max_iterations = CHART_ITERATIONS
    pack = xatlas.PackOptions()
    pack.texels_per_unit = 1e-2  # a tiny layout: only the charts matter here, the real packing comes later
    pack.padding = 0
    atlas.generate(charting, pack)
    scale = np.array([atlas.width, atlas.height], np.float64)
    sources, split_faces, uvs = [], np.empty((len(faces), 3), np.int64), []
    offset = 0
    for i, (members, used) in enumerate(zip(chunk_faces, chunk_vertices)):
        vmap, index, uv = atlas[i]
        if len(index) != len(members):
            raise LyraAssetsError(f"UV unwrap: xatlas returned {len(index)} faces for a chunk of {len(members)}")
        sources.append(used[vmap])
        split_faces[members] = index.astype(np.int64) + offset
        uvs.append(uv * scale)
        offset += len(vmap)
    return np.concatenate(sources), split_faces, np.concatenate(uvs)


def _chart_ids(faces: np.ndarray, n_vertices: int) -> np.ndarray:
    """(V,) chart of each split vertex: charts are the pieces the split mesh falls into."""
    rows = faces[:, [0, 1]].ravel()
    cols = faces[:, [1, 2]].ravel()
    graph = scipy.sparse.coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(n_vertices,) * 2)
    return scipy.sparse.csgraph.connected_components(graph, directed=False)[1]


def _to_metres(uv: np.ndarray, faces: np.ndarray, positions: np.ndarray, charts: np.ndarray) -> np.ndarray:
    """Scale each chart so its UV area equals its surface area (UV units = metres), and lay the charts
    out side by side: xatlas treats UV vertices at one position as one, so charts must not touch."""
    surface = triangle_areas(positions, faces)
    flat = np.abs(_signed_uv_areas(uv, faces))
    face_chart = charts[faces[:, 0]]
    n = charts.max() + 1
    scale = np.sqrt(np.bincount(face_chart, surface, n) / np.maximum(np.bincount(face_chart, flat, n), 1e-30))
    scaled = uv * scale[charts, None]
    low = np.stack([np.full(n, np.inf), np.full(n, np.inf)], axis=1)
    high = -low
    np.minimum.at(low, charts, scaled)
    np.maximum.at(high, charts, scaled)
    width = high[:, 0] - low[:, 0]
    start = np.concatenate([[0.0], np.cumsum(width + CHART_GAP_M)[:-1]])
    return scaled - low[charts] + np.column_stack([start, np.zeros(n)])[charts]


# -- packing ----------------------------------------------------------------------------------------------


def _fill_density(uv: np.ndarray, faces: np.ndarray, charts: np.ndarray, size: int, padding: int,
                  efficiency: float = PACKING_EFFICIENCY) -> float:
    """Texels per metre at which the padded charts fill `efficiency` of the atlas.

    A chart of area a and outline length L padded by p texels covers about a t^2 + L t p' + pi p'^2 texels
    at density t (p' = p + 1: bilinear filtering's extra texel); solve sum = efficiency * size^2 for t.
    """
    area = float(np.abs(_signed_uv_areas(uv, faces)).sum())
    outline = float(_boundary_length(uv, faces))
    n_charts = int(charts.max()) + 1
    pad = padding + 1
    a, b, c = area, outline * pad, n_charts * math.pi * pad * pad - efficiency * size * size
    if area <= 0:
        raise LyraAssetsError("UV unwrap: the mesh has no surface area")
    disc = b * b - 4 * a * c
    # c >= 0: the paddings alone would fill the atlas; aim for a sliver of density and let xatlas say.
    return (-b + math.sqrt(disc)) / (2 * a) if c < 0 else 0.1 * size / math.sqrt(area)


def _pack(uv: np.ndarray, faces: np.ndarray, size: int, padding: int, density: float,
          headroom: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(vertex of `uv` per packed vertex, packed faces, packed UVs in [0, 1], density used).

    Tried first at `headroom` times the density, if given; then at the density, lowered by DENSITY_RETRY
    after each overflow (up to PACKING_TRIES, or until STUCK_TRIES in a row free no atlas page).
    """
    first = [] if headroom is None else [density * headroom]
    densities = first + [density * DENSITY_RETRY ** k for k in range(PACKING_TRIES)]
    overflow, stuck = np.inf, 0
    with closing(_packs(uv, faces, size, padding, densities)) as packs:  # closing it stops the tries still running
        for tries, (density, packed) in enumerate(packs):
            if isinstance(packed, tuple):
                vmap, index, packed_uv = packed
                return vmap.astype(np.int64), index.astype(np.int64), np.clip(packed_uv, 0.0, 1.0), density
            if tries < len(first):  # a density above the estimate: overflowing it says little
                continue
            # Lower densities that free no atlas page: the gutters, not the charts, fill the atlas.
            stuck = stuck + 1 if packed >= overflow else 0
            if stuck == STUCK_TRIES:
                break
            overflow = min(overflow, packed)
    raise AtlasFull(f"UV unwrap: the charts with their {padding}-texel gutters do not fit one {size}x{size} "
                    f"atlas at any density; use a larger --texture-size ({len(faces):,} triangles now)")


def _packs(uv: np.ndarray, faces: np.ndarray, size: int, padding: int,
           densities: list[float]) -> Iterator[tuple[float, tuple[np.ndarray, ...] | int]]:
    """(density, _pack_once's result) for the densities in order, as far as the caller reads.

    xatlas holds the GIL while it packs (0.5 s a try on the example's 150k-triangle LOD0 at 2048²), which
    would stall the asset stage's other thread; and the first density tried may overflow (it does there).
    So where forked.AVAILABLE, each try runs in a forked process with the next PARALLEL_PACKS - 1 beside it,
    and tries the caller no longer needs are stopped. The results are the ones trying in turn gives.
    """
    if not forked.AVAILABLE:
        for density in densities:
            yield density, _pack_once(uv, faces, size, padding, density)
        return
    running: deque[tuple[float, forked.Forked]] = deque()

    def oldest() -> tuple[float, tuple[np.ndarray, ...] | int]:
        density, child = running[0]
        packed = child.result()  # listed until its result is in, so an interrupt meanwhile still stops it
        running.popleft()
        return density, packed

    try:
        for density in densities:
            running.append((density, forked.Forked(_pack_once, uv, faces, size, padding, density)))
            if len(running) == PARALLEL_PACKS:
                yield oldest()
        while running:
            yield oldest()
    finally:
        for _, child in running:
            child.kill()


def _pack_once(uv: np.ndarray, faces: np.ndarray, size: int, padding: int,
               density: float) -> tuple[np.ndarray, ...] | int:
    """xatlas' (vertex map, faces, UVs) if the charts fit one atlas at `density`, else its atlas count."""
    atlas = forked.keep(xatlas.Atlas())
    atlas.add_uv_mesh(uv.astype(np.float32), faces.astype(np.uint32))
    options = xatlas.PackOptions()
    options.resolution = size
    options.texels_per_unit = density
    options.padding = padding
    options.bilinear = True
    atlas.generate(xatlas.ChartOptions(), options)
    return atlas[0] if atlas.atlas_count == 1 else atlas.atlas_count


# -- measures ---------------------------------------------------------------------------------------------


def _signed_uv_areas(uv: np.ndarray, faces: np.ndarray) -> np.ndarray:
    t = uv[faces]
    e1, e2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    return 0.5 * (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])


def _boundary_length(uv: np.ndarray, faces: np.ndarray) -> float:
    """Total length of the edges used by one face only: the charts' outlines."""
    edges, key = _edge_keys(faces)
    _, first, counts = np.unique(key, return_index=True, return_counts=True)
    border = edges[first[counts == 1]]
    return float(np.linalg.norm(uv[border[:, 0]] - uv[border[:, 1]], axis=1).sum())


# -- tangent frames ---------------------------------------------------------------------------------------


def tangents(vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """(V, 4) glTF TANGENT: unit xyz along +u, orthogonal to the normal; w = +-1 so that
    bitangent = w * cross(normal, tangent) points along -v (towards the image's top, glTF's +Y).

    MikkTSpace-like: per-face tangent and bitangent from the UV gradients, normalised, summed at each
    corner weighted by the corner's angle, then orthogonalised against the vertex normal.
    """
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    n = np.asarray(normals, np.float64)
    p, t = v[f], np.asarray(uv, np.float64)[f]
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    du1, du2 = t[:, 1, 0] - t[:, 0, 0], t[:, 2, 0] - t[:, 0, 0]
    dv1, dv2 = -(t[:, 1, 1] - t[:, 0, 1]), -(t[:, 2, 1] - t[:, 0, 1])  # image-up is +Y: flip v
    det = du1 * dv2 - du2 * dv1
    ok = np.abs(det) > 1e-20
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)[:, None]
    face_t = unit((e1 * dv2[:, None] - e2 * dv1[:, None]) * inv)
    face_b = unit((e2 * du1[:, None] - e1 * du2[:, None]) * inv)
    angles = _corner_angles(p)
    acc_t, acc_b = np.zeros_like(v), np.zeros_like(v)
    for corner in range(3):
        w = angles[:, corner:corner + 1]
        np.add.at(acc_t, f[:, corner], face_t * w)
        np.add.at(acc_b, f[:, corner], face_b * w)
    tangent = acc_t - n * np.sum(acc_t * n, axis=1, keepdims=True)
    norm = np.linalg.norm(tangent, axis=1, keepdims=True)
    # A vertex whose UVs collapsed has no direction of its own: any perpendicular keeps the frame valid.
    tangent = np.where(norm > 1e-12, tangent / np.maximum(norm, 1e-30), perpendicular(n))
    handed = np.where(np.sum(np.cross(n, tangent) * acc_b, axis=1) < 0, -1.0, 1.0)
    return np.hstack([tangent, handed[:, None]]).astype(np.float32)


def _corner_angles(p: np.ndarray) -> np.ndarray:
    out = np.empty(p.shape[:2])
    for k in range(3):
        a = unit(p[:, (k + 1) % 3] - p[:, k])
        b = unit(p[:, (k + 2) % 3] - p[:, k])
        out[:, k] = np.arccos(np.clip(np.sum(a * b, axis=1), -1.0, 1.0))
    return out

