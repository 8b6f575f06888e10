"""TSDF fusion: a walkthrough's RGB-D frames -> one dense, vertex-coloured triangle mesh.

Every frame's depth is fused into a voxel grid of truncated signed distances (Curless & Levoy 1996, as in
KinectFusion), colour is averaged alongside, and marching cubes extracts the zero level set.
bench/bench_fusion.py compares speed and accuracy with Open3D's VoxelBlockGrid on the same data.

How the grid is laid out, and why:
- Voxels are grouped in tiles of TILE^3 and stored tile by tile (arrays shaped (tx, ty, tz, T, T, T)): a
  tile is contiguous in memory, and the few pixels it projects to stay in cache while it is integrated.
  Tiles are also the unit of parallel work.
- Only tiles within the truncation band of some frame's depth are integrated (by every frame that sees
  them, so all frames still carve them): a surface can only appear there, and in a room most of the volume
  is open air far from any wall.

Conventions kept here:
- Voxel (i, j, k) has its centre at origin + voxel_size * (i, j, k), in the walkthrough's world frame.
- A voxel projects to continuous pixel coordinates (u, v) with `trajectory.project`'s formula and reads
  pixel (floor(u), floor(v)): pixel (col, row) covers [col, col + 1) x [row, row + 1), centre at +0.5.
- The TSDF is positive in front of the surface (the free space the cameras stood in) and negative behind,
  so marching cubes winds faces with their normals towards the cameras.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numba
import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import trimesh
from skimage.measure import marching_cubes

from ..errors import LyraAssetsError
from ..progress import Progress, silent
from ..trajectory import pixel_rays
from ..walkthrough import Walkthrough

MAX_VOXELS = 64_000_000  # memory cap: 24 bytes a voxel while fusing, about 1.5 GB of grid at most
DEFAULT_VOXELS = 8_000_000  # what the automatic voxel size aims for: about 2 cm in a room, seconds on 2 cores
TRUNCATION_VOXELS = 4  # truncation distance in voxels: wide enough for grazing views, thin enough for detail
TILE = 8  # voxels along each side of a tile
BOUNDS_PERCENTILE = 0.1  # the grid spans the 0.1..99.9th percentile of the depth points, so a few stray
#                          far points (a generator's outliers) cannot blow up the grid
BOUNDS_STRIDE = 8  # every 8th pixel each way is plenty to find the scene's extent
BOUNDS_POINTS = 1_000_000  # ... from enough frames for at most this many points (24 MB)
BAND_STRIDE = 4  # every 4th pixel each way finds the band tiles; the reach covers the pixels in between
MIN_COMPONENT_FRACTION = 0.001  # connected pieces under 0.1% of the largest piece's area are floaters
# The first camera is the spawn, so its whole view must be surface. Marching cubes needs all 8 corners of a
# cube observed, which leaves a sawtooth one voxel inside every frustum edge, and no later frame of a walk
# away from the spawn sees there. Frame 0 alone therefore reads its edge pixels' depth (clamped) for voxels
# up to SPAWN_GUARD_VOXELS outside its image (the surface continued as a plane; its colour the edge pixel's).
SPAWN_GUARD_VOXELS = 1.5
EDGE_COLLINEAR = 0.1  # relative mismatch of inverse-depth steps up to which three edge pixels are one plane


@dataclass
class FusedScene:
    mesh: trimesh.Trimesh  # dense coloured mesh: vertex_colors RGBA uint8 sRGB, walkthrough's world frame,
    #                        faces wound with normals towards the free space the cameras stood in
    voxel_size: float  # metres actually used
    notes: list[str] = field(default_factory=list)  # what the user should know, e.g. a coarsened grid


def fuse(walk: Walkthrough, voxel_size: float | None = None, max_voxels: int = MAX_VOXELS,
         progress: Progress = silent) -> FusedScene:
    """Fuse every frame's depth and colour into a mesh.

    voxel_size: metres; by default the scene's extent decides (a grid of about DEFAULT_VOXELS voxels).
    max_voxels: memory cap; a grid that would be larger is coarsened, and a note says so.
    Depth 0 (unknown) neither adds surface nor carves free space.
    """
    if voxel_size is not None and not voxel_size > 0:
        raise LyraAssetsError(f"voxel size must be a positive number of metres, got {voxel_size}")
    if max_voxels < 8 * TILE**3:  # the smallest grid: 2 x 2 x 2 tiles
        raise LyraAssetsError(f"a voxel budget of {max_voxels} is too small; allow at least {8 * TILE**3}")
    rays = _PixelRays(walk)
    lo, hi = _scene_bounds(walk, rays)
    voxel, notes = _choose_voxel_size(hi - lo, voxel_size, max_voxels)
    volume = _Volume(lo - _padding(voxel), voxel, _tiles_shape(hi - lo, voxel))

    band = np.zeros(volume.tiles_shape, bool)
    for i in range(len(walk)):
        _mark_band(band, walk.depth[i], rays[i], walk.path.c2w[i], volume.origin, voxel, volume.truncation,
                   walk.path.K[i, 0, 0], BAND_STRIDE)
    band_tiles = np.argwhere(band)

    w2c = walk.path.w2c
    progress("fuse", 0, len(walk))
    for i in range(len(walk)):
        tiles = volume.tiles_in_view(band_tiles, w2c[i], walk.path.K[i], walk.path.width, walk.path.height,
                                     float(walk.depth[i].max()))
        volume.integrate(tiles, w2c[i], walk.path.K[i], walk.depth[i], walk.frames[i],
                         SPAWN_GUARD_VOXELS if i == 0 else 0.0)
        progress("fuse", i + 1, len(walk))
    return FusedScene(_drop_floaters(volume.extract_mesh()), voxel, notes)


# -- grid size ------------------------------------------------------------------------------------------


class _PixelRays:
    """pixel_rays for each frame, computed once per distinct K (usually one for the whole walkthrough)."""

    def __init__(self, walk: Walkthrough) -> None:
        self._path = walk.path
        self._cache: dict[bytes, np.ndarray] = {}

    def __getitem__(self, i: int) -> np.ndarray:
        K = self._path.K[i]
        key = K.tobytes()
        if key not in self._cache:
            self._cache[key] = pixel_rays(K, self._path.width, self._path.height)
        return self._cache[key]


def _scene_bounds(walk: Walkthrough, rays: _PixelRays) -> tuple[np.ndarray, np.ndarray]:
    """Robust world-space bounds of the depth points (a subsample of pixels from every frame)."""
    points = []
    # Every frame_step-th frame: at most BOUNDS_POINTS points, however long the walk.
    per_frame = math.ceil(walk.path.height / BOUNDS_STRIDE) * math.ceil(walk.path.width / BOUNDS_STRIDE)
    frame_step = max(1, math.ceil(per_frame * len(walk) / BOUNDS_POINTS))
    for i in range(0, len(walk), frame_step):
        depth = walk.depth[i, ::BOUNDS_STRIDE, ::BOUNDS_STRIDE]
        valid = depth > 0
        cam = rays[i][::BOUNDS_STRIDE, ::BOUNDS_STRIDE][valid] * depth[valid, None]
        points.append(cam @ walk.path.c2w[i, :3, :3].T + walk.path.c2w[i, :3, 3])
    points = np.concatenate(points)
    if len(points) == 0:
        raise LyraAssetsError("fusion: the walkthrough has no valid depth (every value is 0 = unknown)")
    lo, hi = np.percentile(points, [BOUNDS_PERCENTILE, 100 - BOUNDS_PERCENTILE], axis=0)
    return lo, hi


def _padding(voxel: float) -> float:
    """Room around the depth points for the truncation band on both sides, plus one voxel."""
    return (TRUNCATION_VOXELS + 1) * voxel


def _tiles_shape(extent: np.ndarray, voxel: float) -> tuple[int, int, int]:
    voxels = np.ceil((extent + 2 * _padding(voxel)) / voxel) + 1
    return tuple(int(n) for n in np.ceil(voxels / TILE))


def _choose_voxel_size(extent: np.ndarray, requested: float | None, max_voxels: int) -> tuple[float, list[str]]:
    if requested is None:
        return _fitting_voxel_size(extent, 0.0, min(DEFAULT_VOXELS, max_voxels)), []  # as fine as fits
    fitted = _fitting_voxel_size(extent, requested, max_voxels)
    if fitted == requested:
        return fitted, []
    size = " x ".join(f"{e:.1f}" for e in extent)
    note = (f"scene too large for the voxel budget ({max_voxels:,} voxels for {size} m): "
            f"coarsened from {100 * requested:.2g} cm to {100 * fitted:.2g} cm")
    return fitted, [note]


def _fitting_voxel_size(extent: np.ndarray, voxel: float, budget: int) -> float:
    """The finest size from voxel up (in 2% steps) whose padded, tiled grid holds at most budget voxels."""
    voxel = max(voxel, _round_up(math.cbrt(float(np.prod(extent)) / budget)), 1e-4)  # nothing finer fits
    while math.prod(_tiles_shape(extent, voxel)) * TILE**3 > budget:
        voxel = _round_up(voxel * 1.02)
    return voxel


def _round_up(metres: float) -> float:
    """Up to a tenth of a millimetre, so reported voxel sizes read cleanly."""
    return math.ceil(metres * 1e4) / 1e4


@numba.njit(parallel=True, cache=True, fastmath=True)
def _mark_band(band, depth, rays, c2w, origin, voxel, truncation, fx, stride):
    """Flag the tiles that hold voxels within the truncation band of a depth point.

    The reach adds `stride` pixel footprints, so the pixels between the sampled ones are covered too.
    """
    height, width = depth.shape
    nx, ny, nz = band.shape
    for r in numba.prange((height + stride - 1) // stride):
        row = r * stride
        for col in range(0, width, stride):
            d = depth[row, col]
            if d <= 0.0:
                continue
            x, y, z = rays[row, col, 0] * d, rays[row, col, 1] * d, rays[row, col, 2] * d
            reach = math.sqrt(x * x + y * y + z * z) / d * (truncation + stride * d / fx) / voxel
            i0, i1 = _tile_span((_world(c2w, 0, x, y, z) - origin[0]) / voxel, reach, nx)
            j0, j1 = _tile_span((_world(c2w, 1, x, y, z) - origin[1]) / voxel, reach, ny)
            k0, k1 = _tile_span((_world(c2w, 2, x, y, z) - origin[2]) / voxel, reach, nz)
            for ti in range(i0, i1):
                for tj in range(j0, j1):
                    for tk in range(k0, k1):
                        if not band[ti, tj, tk]:  # reading first keeps the threads' cache lines shared
                            band[ti, tj, tk] = True  # every writer writes True: the race is harmless


@numba.njit(inline="always", fastmath=True)
def _world(c2w, axis, x, y, z):
    """One world coordinate of camera point (x, y, z)."""
    return c2w[axis, 0] * x + c2w[axis, 1] * y + c2w[axis, 2] * z + c2w[axis, 3]


@numba.njit(inline="always", fastmath=True)
def _tile_span(q, reach, n):
    """Tiles [lo, hi) holding the voxels whose index is within reach of q, clipped to [0, n)."""
    return max(0, math.floor((q - reach) / TILE)), min(n, math.floor((q + reach) / TILE) + 1)


# -- the volume -----------------------------------------------------------------------------------------


class _Volume:
    """Tiled TSDF, weight and colour arrays; weight 0 marks a voxel no view has observed."""

    def __init__(self, origin: np.ndarray, voxel: float, tiles_shape: tuple[int, int, int]) -> None:
        self.origin, self.voxel, self.tiles_shape = origin, voxel, tiles_shape
        self.truncation = TRUNCATION_VOXELS * voxel
        shape = (*tiles_shape, TILE, TILE, TILE)
        # np.zeros leaves pages unallocated until written, so tiles far outside the band cost little memory.
        self.tsdf = np.zeros(shape, np.float32)
        self.weight = np.zeros(shape, np.float32)
        # Colour has its own weight: it only counts views whose surface is near the voxel (see _integrate).
        self.colour = np.zeros((*shape, 3), np.float32)
        self.colour_weight = np.zeros(shape, np.float32)

    def tiles_in_view(self, tiles: np.ndarray, w2c: np.ndarray, K: np.ndarray, width: int, height: int,
                      max_depth: float) -> np.ndarray:
        """The given tiles that a view frustum (up to max_depth) may touch: a conservative test."""
        (fx, _, cx), (_, fy, cy) = K[:2]
        far = max_depth + self.truncation
        # Each tile's bounding sphere (around its voxel centres), in camera coordinates.
        centre = self.origin + self.voxel * (tiles * TILE + (TILE - 1) / 2)
        x, y, z = (centre @ w2c[:3, :3].T + w2c[:3, 3]).T
        radius = self.voxel * (TILE - 1) * math.sqrt(3) / 2
        # The frustum's planes, (normal, normal . p) with normal . p >= 0 inside:
        # u >= 0, u <= width, v >= 0, v <= height (multiplied by z > 0), in front, not too far.
        planes = [((fx, 0, cx), fx * x + cx * z), ((-fx, 0, width - cx), (width - cx) * z - fx * x),
                  ((0, fy, cy), fy * y + cy * z), ((0, -fy, height - cy), (height - cy) * z - fy * y),
                  ((0, 0, 1), z), ((0, 0, -1), far - z)]
        inside = np.ones(len(tiles), bool)
        for normal, value in planes:
            inside &= value >= -radius * math.hypot(*normal)  # the sphere reaches the plane's inner side
        return tiles[inside]

    def integrate(self, tiles: np.ndarray, w2c: np.ndarray, K: np.ndarray, depth: np.ndarray,
                  rgb: np.ndarray, guard_voxels: float = 0.0) -> None:
        # Tiles differ a lot in work (a frustum edge cuts some): hand them to threads in small chunks.
        with numba.parallel_chunksize(16):
            _integrate(self.tsdf, self.weight, self.colour, self.colour_weight, tiles, self.origin,
                       self.voxel, self.truncation, w2c, K, depth, rgb, guard_voxels)

    def extract_mesh(self) -> trimesh.Trimesh:
        # Only cubes whose 8 corners were all observed may hold surface: the edge of the observed region
        # (the back of the truncation band, a frustum's side) would otherwise make a second, fake surface.
        # skimage's mask flags a cube by its highest corner, hence the [1:, 1:, 1:].
        seen = _untile(self.weight > 0)
        cubes = np.zeros(seen.shape, bool)
        cubes[1:, 1:, 1:] = (seen[:-1, :-1, :-1] & seen[1:, :-1, :-1] & seen[:-1, 1:, :-1]
                             & seen[:-1, :-1, 1:] & seen[1:, 1:, :-1] & seen[1:, :-1, 1:]
                             & seen[:-1, 1:, 1:] & seen[1:, 1:, 1:])
        del seen
        tsdf = _untile(self.tsdf)
        if not (tsdf[cubes] < 0).any():
            raise LyraAssetsError("fusion found no surface: the depth maps never agree on one; check the "
                                  "walkthrough's depth (contact_sheet.png) and camera poses")
        # 'descent' winds faces with normals towards higher values: the free space the cameras stood in.
        index, faces, _, _ = marching_cubes(tsdf, level=0.0, mask=cubes, allow_degenerate=False,
                                            gradient_direction="descent")
        del tsdf, cubes
        rgb = self._vertex_colours(index)
        rgba = np.concatenate([np.clip(rgb + 0.5, 0, 255), np.full((len(rgb), 1), 255.0)], axis=1)
        vertices = self.origin + self.voxel * index.astype(np.float64)
        return trimesh.Trimesh(vertices, faces, vertex_colors=rgba.astype(np.uint8), process=False)

    def _vertex_colours(self, index: np.ndarray) -> np.ndarray:
        """Colour at marching-cubes vertices (V, 3 voxel indices), interpolated between voxels that have one.

        A marching-cubes vertex lies on a grid edge: at most one coordinate has a fractional part. A voxel
        can border the surface without ever having been near a surface that a view showed (so without
        colour); the other end of its edge then gives the colour alone.
        """
        base = np.floor(index).astype(np.int64)
        frac = index - base
        axis = np.argmax(frac, axis=1)
        t = frac[np.arange(len(index)), axis][:, None]
        step = np.eye(3, dtype=np.int64)[axis] * (t > 0)  # no step on a grid point: base + 1 may be outside

        def at(tiled: np.ndarray, ijk: np.ndarray) -> np.ndarray:
            i, j, k = ijk.T
            return tiled[i // TILE, j // TILE, k // TILE, i % TILE, j % TILE, k % TILE]

        w0 = (1 - t) * (at(self.colour_weight, base) > 0)[:, None]
        w1 = t * (at(self.colour_weight, base + step) > 0)[:, None]
        return (w0 * at(self.colour, base) + w1 * at(self.colour, base + step)) / np.maximum(w0 + w1, 1e-12)


def _untile(tiled: np.ndarray) -> np.ndarray:
    """(tx, ty, tz, T, T, T) tiles -> one (tx T, ty T, tz T) volume (a copy)."""
    tx, ty, tz = tiled.shape[:3]
    return tiled.transpose(0, 3, 1, 4, 2, 5).reshape(tx * TILE, ty * TILE, tz * TILE)


@numba.njit(parallel=True, cache=True, fastmath=True)
def _integrate(tsdf, weight, colour, colour_weight, tiles, origin, voxel, truncation, w2c, K, depth, rgb, guard):
    """Fold one frame into the given tiles: running averages of TSDF and colour, each view weighing 1.

    Voxels up to `guard` voxels outside the image read the nearest edge pixel (see SPAWN_GUARD_VOXELS).
    """
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    height, width = depth.shape
    # Camera coordinates move by a constant step along k, so the inner loop needs no matrix product.
    sx, sy, sz = w2c[0, 2] * voxel, w2c[1, 2] * voxel, w2c[2, 2] * voxel
    one = np.float32(1.0)
    for n in numba.prange(len(tiles)):
        ti, tj, tk = tiles[n, 0], tiles[n, 1], tiles[n, 2]
        tile_tsdf, tile_weight = tsdf[ti, tj, tk], weight[ti, tj, tk]
        tile_colour, tile_colour_weight = colour[ti, tj, tk], colour_weight[ti, tj, tk]
        z0 = origin[2] + tk * TILE * voxel
        for a in range(TILE):
            x = origin[0] + (ti * TILE + a) * voxel
            for b in range(TILE):
                y = origin[1] + (tj * TILE + b) * voxel
                bx = w2c[0, 0] * x + w2c[0, 1] * y + w2c[0, 2] * z0 + w2c[0, 3]
                by = w2c[1, 0] * x + w2c[1, 1] * y + w2c[1, 2] * z0 + w2c[1, 3]
                bz = w2c[2, 0] * x + w2c[2, 1] * y + w2c[2, 2] * z0 + w2c[2, 3]
                for c in range(TILE):
                    zc = bz + c * sz
                    if zc <= 1e-6:
                        continue
                    u = fx * (bx + c * sx) / zc + cx  # fastmath computes 1 / zc once
                    v = fy * (by + c * sy) / zc + cy
                    g = guard * voxel * fx / zc  # the guard band in pixels at this depth
                    if not (-g <= u < width + g and -g <= v < height + g):
                        continue
                    # the pixel whose area holds (u, v) (its centre is at +0.5), or the nearest edge pixel
                    col = min(max(int(math.floor(u)), 0), width - 1)
                    row = min(max(int(math.floor(v)), 0), height - 1)
                    d = depth[row, col]
                    if d <= 0.0:  # unknown depth says nothing: neither surface nor free space
                        continue
                    outside_u, outside_v = not 0.0 <= u < width, not 0.0 <= v < height
                    if outside_u or outside_v:
                        d = _extrapolated(depth, row, col, u - col - 0.5 if outside_u else 0.0,
                                          v - row - 0.5 if outside_v else 0.0)
                        if d <= 0.0:
                            continue
                    sdf = d - zc
                    if sdf < -truncation:  # hidden behind the surface: unobserved
                        continue
                    # float32 throughout, as stored: no conversions in the innermost updates
                    t = np.float32(min(1.0, sdf / truncation))
                    w = tile_weight[a, b, c]
                    tile_tsdf[a, b, c] = (tile_tsdf[a, b, c] * w + t) / (w + one)
                    tile_weight[a, b, c] = w + one
                    if t < one:  # the pixel's colour is this voxel's only near the surface the pixel shows
                        w = tile_colour_weight[a, b, c]
                        for ch in range(3):
                            mean = tile_colour[a, b, c, ch]
                            tile_colour[a, b, c, ch] = (mean * w + rgb[row, col, ch]) / (w + one)
                        tile_colour_weight[a, b, c] = w + one


@numba.njit(inline="always", fastmath=True)
def _extrapolated(depth, row, col, du, dv):
    """Depth du, dv pixels past edge pixel (row, col) (0: not past that edge), or 0 where it can't be told.

    On a plane, inverse depth is affine in the pixel coordinates: it is continued with its slope over the
    two pixels inside the edge where those three pixels lie on one plane, and held where they don't (a
    crease or an occluding edge meets the image's edge there).
    """
    inverse = 1.0 / depth[row, col]
    if du != 0.0:
        step = 1 if col == 0 else -1
        inverse += du * step * _edge_slope(depth[row, col], depth[row, col + step], depth[row, col + 2 * step])
    if dv != 0.0:
        step = 1 if row == 0 else -1
        inverse += dv * step * _edge_slope(depth[row, col], depth[row + step, col], depth[row + 2 * step, col])
    return 1.0 / inverse if inverse > 0.0 else 0.0


@numba.njit(inline="always", fastmath=True)
def _edge_slope(d0, d1, d2):
    """Inverse depth's change per pixel inwards from d0 over d1 and d2; 0 unless the three are collinear."""
    if d1 <= 0.0 or d2 <= 0.0:
        return 0.0
    a, b = 1.0 / d1 - 1.0 / d0, 1.0 / d2 - 1.0 / d1
    if abs(a - b) > EDGE_COLLINEAR * (abs(a) + abs(b)) + 1e-6 / d0:
        return 0.0
    return a


# -- clean-up --------------------------------------------------------------------------------------------


def _drop_floaters(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """Keep connected pieces whose area is at least MIN_COMPONENT_FRACTION of the largest piece's."""
    faces = mesh.faces
    n = len(mesh.vertices)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = scipy.sparse.coo_matrix((np.ones(len(edges), bool), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, labels = scipy.sparse.csgraph.connected_components(graph, directed=False)
    face_labels = labels[faces[:, 0]]
    area = np.bincount(face_labels, weights=mesh.area_faces)
    keep = area[face_labels] >= MIN_COMPONENT_FRACTION * area.max()
    if keep.all():
        return mesh
    kept = faces[keep]
    used = np.zeros(n, bool)
    used[kept] = True
    remap = np.cumsum(used) - 1
    return trimesh.Trimesh(mesh.vertices[used], remap[kept], vertex_colors=mesh.visual.vertex_colors[used],
                           process=False)
