"""TSDF fusion: a walkthrough's RGB-D frames -> one dense, vertex-coloured triangle mesh.

Every frame's depth is fused into a voxel grid of truncated signed distances (Curless & Levoy 1996, as in
KinectFusion), colour is averaged alongside, and marching cubes extracts the zero level set.
bench/bench_fusion.py compares speed and accuracy with Open3D's VoxelBlockGrid on the same data.

How the grid is laid out, and why:
- Voxels are grouped in tiles of TILE^3 and stored tile by tile (arrays shaped (tx, ty, tz, T, T, T)): a
  tile is contiguous in memory, and the few pixels it projects to stay in cache while it is integrated.
  Tiles are also the unit of parallel work.
- Only blocks (BLOCK^3 eighths of a tile) within the truncation band of some frame's depth are integrated
  (by every frame that sees them, so all frames still carve them): a surface can only appear there, and in
  a room most of the volume is open air far from any wall. Blocks finer than tiles halve the work: a band
  of 8 voxels rarely fills the tiles it crosses. The band follows each pixel's ray (_mark_band), so floors
  and walls seen at grazing angles get thin bands: 17-38 % less fusion CPU than a ball around each depth
  point, with the same mesh, on the walks it was measured on (bench_fusion's, the example's presets).

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
from ..heap import untouched_zeros
from ..progress import Progress, silent
from ..trajectory import pixel_rays
from ..walkthrough import Walkthrough

MAX_VOXELS = 64_000_000  # memory cap: 24 bytes a voxel while fusing, about 1.5 GB of grid at most
DEFAULT_VOXELS = 8_000_000  # what the automatic voxel size aims for: about 2 cm in a room, seconds on 2 cores
TRUNCATION_VOXELS = 4  # truncation distance in voxels: wide enough for grazing views, thin enough for detail
TILE = 8  # voxels along each side of a tile
BLOCK = TILE // 2  # voxels along each side of a block, the band's unit
BOUNDS_PERCENTILE = 0.1  # the grid spans the 0.1..99.9th percentile of the depth points, so a few stray
#                          far points (a generator's outliers) cannot blow up the grid
BOUNDS_STRIDE = 8  # every 8th pixel each way is plenty to find the scene's extent
BOUNDS_POINTS = 1_000_000  # ... from enough frames for at most this many points (24 MB)
FRAME_BATCH = 16  # frames folded in per kernel call: threads start and meet up once per batch
TILE_RUN = 16  # tiles a thread takes at a time
BAND_STRIDE = 4  # every 4th pixel each way finds the band blocks; a footprint of slack covers the pixels between
# ... which on a slanted surface (a floor far ahead) lie along the line to the next sampled point, however
# far: the blocks along it are flagged too, unless it is more than MAX_SLANT footprints long (a depth edge,
# where each pixel between is flagged on its own; 16 footprints: a surface seen within about 3.6 degrees of
# edge-on).
MAX_SLANT = 16.0
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
    lo, hi = _scene_bounds(walk)
    voxel, notes = _choose_voxel_size(hi - lo, voxel_size, max_voxels)
    volume = _Volume(lo - _padding(voxel), voxel, _tiles_shape(hi - lo, voxel))
    volume.integrate_walk(walk, *_band_tiles(_band(walk, volume)), progress)
    return FusedScene(_drop_floaters(volume.extract_mesh()), voxel, notes)


def _band(walk: Walkthrough, volume: _Volume) -> np.ndarray:
    """Which of the volume's blocks (a bool per block) hold voxels within some frame's truncation band."""
    path = walk.path
    band = np.zeros([2 * n for n in volume.tiles_shape], bool)
    for batch in _batches(len(walk)):
        _mark_band(band, walk.depth[batch], path.K[batch], path.c2w[batch], volume.origin, volume.voxel,
                   volume.truncation, BAND_STRIDE)
    _mark_guard(band, walk.depth[0], path.K[0], path.c2w[0], volume.origin, volume.voxel, volume.truncation,
                BAND_STRIDE, SPAWN_GUARD_VOXELS)
    return band


def _band_tiles(band: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tiles holding band blocks (n, 3), and which of their 8 blocks are in the band (bit 4a + 2b + c).

    The tiles come in Morton (Z) order: a run of them is a compact cluster, not a line, so the pixels it
    projects to in a frame are few and its neighbours' overlap them (measured: 5-8 % less integration time).
    """
    tx, ty, tz = (n // 2 for n in band.shape)
    by_tile = band.reshape(tx, 2, ty, 2, tz, 2).transpose(0, 2, 4, 1, 3, 5).reshape(tx, ty, tz, 8)
    bits = by_tile.astype(np.uint8) @ (1 << np.arange(8, dtype=np.uint8))  # < 256: no overflow
    tiles = np.argwhere(bits)
    tiles = tiles[np.argsort(_morton_code(tiles))]
    return tiles, bits[tuple(tiles.T)]


def _morton_code(ijk: np.ndarray) -> np.ndarray:
    """Interleaved bits of (n, 3) non-negative indices below 2**21 (i's highest)."""
    code = np.zeros(len(ijk), np.int64)
    for bit in range(21):
        for axis in range(3):
            code |= ((ijk[:, axis].astype(np.int64) >> bit) & 1) << (3 * bit + 2 - axis)
    return code


def _batches(frames: int) -> list[slice]:
    """Frames in groups of FRAME_BATCH: one parallel kernel call each, so threads start and meet up rarely."""
    return [slice(i, min(i + FRAME_BATCH, frames)) for i in range(0, frames, FRAME_BATCH)]


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


def _scene_bounds(walk: Walkthrough) -> tuple[np.ndarray, np.ndarray]:
    """Robust world-space bounds of the depth points (a subsample of pixels from every frame)."""
    rays = _PixelRays(walk)
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


# nogil, as _integrate: the build's walkthrough writer (a Python thread) keeps running meanwhile
@numba.njit(parallel=True, cache=True, fastmath=True, nogil=True)
def _mark_band(band, depth, K, c2w, origin, voxel, truncation, stride):
    """Flag the blocks that hold voxels within the truncation band of a depth point of some frame.

    A sampled pixel's band is the segment of its ray from `truncation` in front of its depth to `truncation`
    behind (depth along the optical axis, as the TSDF measures it), widened by the footprint of `stride`
    pixels so the pixels between the sampled ones are covered. Where the surface slants away between two
    sampled points (right and below), the segments of points a block apart on the line between them are
    flagged too; where the depth jumps between them, the segment of each pixel between. A segment, not a
    ball: a floor or wall seen at a grazing angle gets a band as thin as the views make it, not one as thick
    as the truncation distance all round.
    """
    frames, height, width = depth.shape
    rows = (height + stride - 1) // stride
    for r in numba.prange(frames * rows):
        f, row = r // rows, r % rows * stride
        fx, fy, cx, cy = K[f, 0, 0], K[f, 1, 1], K[f, 0, 2], K[f, 1, 2]
        flagged = np.full(6, -1)  # the box last flagged along this row: the next sampled point often repeats it
        for col in range(0, width, stride):
            d = depth[f, row, col]
            if d <= 0.0:
                continue
            x, y, z = (col + 0.5 - cx) / fx * d, (row + 0.5 - cy) / fy * d, d  # the pixel centre's ray
            footprint = stride * d / fx
            slack = _slack(x, y, z, footprint, voxel)
            _flag_segment(band, c2w[f], origin, voxel, truncation, x, y, z, slack, flagged)
            for dc, dr in ((stride, 0), (0, stride)):  # to the next sampled points, right and below
                c, r_ = col + dc, row + dr
                if c >= width or r_ >= height or depth[f, r_, c] <= 0.0:
                    continue
                e = depth[f, r_, c]
                u, v = (c + 0.5 - cx) / fx * e, (r_ + 0.5 - cy) / fy * e
                gap = math.sqrt((u - x) ** 2 + (v - y) ** 2 + (e - z) ** 2)
                if gap <= footprint:  # the slack covers the pixels between
                    continue
                if gap <= MAX_SLANT * footprint:  # a slanted surface: points a block apart on the line
                    _flag_line(band, c2w[f], origin, voxel, truncation, x, y, z, u, v, e, slack, flagged)
                    continue
                # A depth edge: the pixels between may show a surface of their own (a side seen edge-on).
                for k in range(1, stride):
                    ck, rk = col + dc * k // stride, row + dr * k // stride
                    dk = depth[f, rk, ck]
                    if dk > 0.0:
                        xk, yk = (ck + 0.5 - cx) / fx * dk, (rk + 0.5 - cy) / fy * dk
                        _flag_segment(band, c2w[f], origin, voxel, truncation, xk, yk, dk,
                                      _slack(xk, yk, dk, stride * dk / fx, voxel), flagged)


@numba.njit(cache=True, fastmath=True)
def _mark_guard(band, depth, K, c2w, origin, voxel, truncation, stride, guard):
    """Flag the band of the voxels up to `guard` voxels outside one frame's image (SPAWN_GUARD_VOXELS): each
    edge pixel's depth continued outwards (as _integrate reads it), from the edge pixel to as far as a voxel
    that close to the edge can project, with the segments of points a block apart between the two."""
    height, width = depth.shape
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    flagged = np.full(6, -1)
    edges = [(row, col) for row in range(0, height, stride) for col in (0, width - 1)]
    edges += [(row, col) for col in range(0, width, stride) for row in (0, height - 1)]
    edges += [(height - 1, col) for col in (0, width - 1)] + [(row, width - 1) for row in (0, height - 1)]
    for row, col in edges:
        d = depth[row, col]
        if d <= 0.0:
            continue
        # pixels past the centre that a guarded voxel, up to `truncation` nearer than d, reads from
        reach = guard * voxel * fx / max(d - truncation, voxel) + 0.5
        du = -reach if col == 0 else (reach if col == width - 1 else 0.0)
        dv = -reach if row == 0 else (reach if row == height - 1 else 0.0)
        e = _extrapolated(depth, row, col, du, dv)
        if e <= 0.0:  # nothing read there: _integrate skips those voxels
            continue
        x, y = (col + 0.5 - cx) / fx * d, (row + 0.5 - cy) / fy * d
        u, v = (col + 0.5 + du - cx) / fx * e, (row + 0.5 + dv - cy) / fy * e
        slack = _slack(x, y, d, stride * max(d, e) / fx, voxel)
        _flag_segment(band, c2w, origin, voxel, truncation, x, y, d, slack, flagged)
        _flag_segment(band, c2w, origin, voxel, truncation, u, v, e, slack, flagged)
        _flag_line(band, c2w, origin, voxel, truncation, x, y, d, u, v, e, slack, flagged)


@numba.njit(inline="always", fastmath=True)
def _slack(x, y, z, footprint, voxel):
    """A footprint (metres across, at camera point (x, y, z)) in voxels, grown by the ray's slant."""
    return math.sqrt(x * x + y * y + z * z) / z * footprint / voxel


@numba.njit(inline="always", fastmath=True)
def _flag_line(band, c2w, origin, voxel, truncation, x, y, z, u, v, e, slack, flagged):
    """_flag_segment at the points a block apart strictly between camera points (x, y, z) and (u, v, e)."""
    steps = math.ceil(math.sqrt((u - x) ** 2 + (v - y) ** 2 + (e - z) ** 2) / voxel / BLOCK)
    for s in range(1, steps):
        t = s / steps
        _flag_segment(band, c2w, origin, voxel, truncation, x + (u - x) * t, y + (v - y) * t, z + (e - z) * t,
                      slack, flagged)


@numba.njit(inline="always", fastmath=True)
def _flag_segment(band, c2w, origin, voxel, truncation, x, y, z, slack, flagged):
    """Flag the blocks within `slack` voxels of the ray through camera point (x, y, z) between depths
    z - truncation and z + truncation (the box around them), unless that box is `flagged`, the box last
    flagged (which this call then updates)."""
    near, far = max(z - truncation, 1e-3) / z, (z + truncation) / z
    p = _voxel_point(c2w, origin, voxel, x * near, y * near, z * near)
    q = _voxel_point(c2w, origin, voxel, x * far, y * far, z * far)
    nx, ny, nz = band.shape
    i0, i1 = _block_span(min(p[0], q[0]) - slack, max(p[0], q[0]) + slack, nx)
    j0, j1 = _block_span(min(p[1], q[1]) - slack, max(p[1], q[1]) + slack, ny)
    k0, k1 = _block_span(min(p[2], q[2]) - slack, max(p[2], q[2]) + slack, nz)
    if (i0, i1, j0, j1, k0, k1) == (flagged[0], flagged[1], flagged[2], flagged[3], flagged[4], flagged[5]):
        return
    flagged[0], flagged[1], flagged[2], flagged[3], flagged[4], flagged[5] = i0, i1, j0, j1, k0, k1
    for ti in range(i0, i1):
        for tj in range(j0, j1):
            for tk in range(k0, k1):
                if not band[ti, tj, tk]:  # reading first keeps the threads' cache lines shared
                    band[ti, tj, tk] = True  # every writer writes True: the race is harmless


@numba.njit(inline="always", fastmath=True)
def _voxel_point(c2w, origin, voxel, x, y, z):
    """Camera point (x, y, z) in the grid's voxel coordinates."""
    return ((_world(c2w, 0, x, y, z) - origin[0]) / voxel, (_world(c2w, 1, x, y, z) - origin[1]) / voxel,
            (_world(c2w, 2, x, y, z) - origin[2]) / voxel)


@numba.njit(inline="always", fastmath=True)
def _world(c2w, axis, x, y, z):
    """One world coordinate of camera point (x, y, z)."""
    return c2w[axis, 0] * x + c2w[axis, 1] * y + c2w[axis, 2] * z + c2w[axis, 3]


@numba.njit(inline="always", fastmath=True)
def _block_span(lo, hi, n):
    """Blocks [i0, i1) holding the voxels whose index lies in [lo, hi], clipped to [0, n)."""
    return max(0, math.floor(lo / BLOCK)), min(n, math.floor(hi / BLOCK) + 1)


# -- the volume -----------------------------------------------------------------------------------------


class _Volume:
    """Tiled TSDF, weight and colour arrays; weight 0 marks a voxel no view has observed."""

    def __init__(self, origin: np.ndarray, voxel: float, tiles_shape: tuple[int, int, int]) -> None:
        self.origin, self.voxel, self.tiles_shape = origin, voxel, tiles_shape
        self.truncation = TRUNCATION_VOXELS * voxel
        shape = (*tiles_shape, TILE, TILE, TILE)
        # Pages unallocated until written: the tiles outside the band cost no memory.
        self.tsdf = untouched_zeros(shape, np.float32)
        self.weight = untouched_zeros(shape, np.float32)
        # Colour has its own weight: it only counts views whose surface is near the voxel (see _integrate).
        self.colour = untouched_zeros((*shape, 3), np.float32)
        self.colour_weight = untouched_zeros(shape, np.float32)

    def integrate(self, tiles: np.ndarray, blocks: np.ndarray, w2c: np.ndarray, K: np.ndarray, depth: np.ndarray,
                  rgb: np.ndarray, guard_voxels: np.ndarray) -> None:
        """Fold frames (w2c (F, 4, 4), K (F, 3, 3), depth (F, H, W), rgb (F, H, W, 3)) into the tiles' blocks
        (bits, as _band_tiles gives them), in order.

        guard_voxels (F,): per frame, how far outside its image voxels still read it (SPAWN_GUARD_VOXELS).
        """
        far = depth.reshape(len(depth), -1).max(axis=1) + self.truncation
        # Threads take runs of TILE_RUN tiles and pass every frame over a run before the next: the run's
        # voxels and the frame's depth both stay in cache, and threads meet up once per batch of frames.
        _integrate(self.tsdf, self.weight, self.colour, self.colour_weight, tiles, blocks, self.origin, self.voxel,
                   self.truncation, w2c, K, depth, rgb, guard_voxels, far, numba.get_num_threads())

    def integrate_walk(self, walk: Walkthrough, tiles: np.ndarray, blocks: np.ndarray,
                       progress: Progress = silent) -> None:
        """Fold every frame of `walk` into the tiles' blocks, in order (frame 0 with its guard band)."""
        path = walk.path
        w2c = path.w2c
        guard = np.zeros(len(walk))
        guard[0] = SPAWN_GUARD_VOXELS
        progress("fuse", 0, len(walk))
        for batch in _batches(len(walk)):
            self.integrate(tiles, blocks, w2c[batch], path.K[batch], walk.depth[batch], walk.frames[batch],
                           guard[batch])
            for i in range(batch.start, batch.stop):
                progress("fuse", i + 1, len(walk))

    def extract_mesh(self) -> trimesh.Trimesh:
        # Only cubes whose 8 corners were all observed may hold surface: the edge of the observed region
        # (the back of the truncation band, a frustum's side) would otherwise make a second, fake surface.
        # skimage's mask flags a cube by its highest corner, hence the [1:, 1:, 1:].
        seen = _untile(self.weight > 0)
        seen = seen[1:] & seen[:-1]  # both ends of an x edge seen; then of a y, z edge: all 8 corners
        seen = seen[:, 1:] & seen[:, :-1]
        cubes = np.zeros((seen.shape[0] + 1, seen.shape[1] + 1, seen.shape[2]), bool)
        cubes[1:, 1:, 1:] = seen[:, :, 1:] & seen[:, :, :-1]
        del seen
        tsdf = _untile(self.tsdf)
        no_surface = LyraAssetsError("fusion found no surface: the depth maps never agree on one; check the "
                                     "walkthrough's depth (contact_sheet.png) and camera poses")
        if not tsdf.min() < 0:  # marching cubes would refuse a level outside the values
            raise no_surface
        try:
            # 'descent' winds faces with normals towards higher values: the free space the cameras stood in
            index, faces, _, _ = marching_cubes(tsdf, level=0.0, mask=cubes, allow_degenerate=False,
                                                gradient_direction="descent")
        except RuntimeError:  # no observed cube holds the level
            raise no_surface from None
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

        def flat(ijk: np.ndarray) -> np.ndarray:  # voxel indices -> positions in the tiled arrays, flattened
            tiles = np.ravel_multi_index(tuple((ijk // TILE).T), self.tiles_shape)
            return tiles * TILE**3 + np.ravel_multi_index(tuple((ijk % TILE).T), (TILE,) * 3)

        weight, colour = self.colour_weight.reshape(-1), self.colour.reshape(-1, 3)
        at0, at1 = flat(base), flat(base + step)
        w0 = (1 - t) * (weight[at0] > 0)[:, None]
        w1 = t * (weight[at1] > 0)[:, None]
        return (w0 * colour[at0] + w1 * colour[at1]) / np.maximum(w0 + w1, 1e-12)


def _untile(tiled: np.ndarray) -> np.ndarray:
    """(tx, ty, tz, T, T, T) tiles -> one (tx T, ty T, tz T) volume (a copy)."""
    tx, ty, tz = tiled.shape[:3]
    return tiled.transpose(0, 3, 1, 4, 2, 5).reshape(tx * TILE, ty * TILE, tz * TILE)


# nogil: the build saves the walkthrough on a Python thread meanwhile, which would otherwise wait out every
# batch; it takes the cycles the kernel's threads leave idle (~0.5 core: 0.6 s less wall in interleaved builds)
@numba.njit(parallel=True, cache=True, fastmath=True, nogil=True)
def _integrate(tsdf, weight, colour, colour_weight, tiles, blocks, origin, voxel, truncation, w2c, K, depth, rgb, guard,
               far, workers):
    """Fold frames into the tiles, in order: running averages of TSDF and colour, each view weighing 1.

    A tile outside a frame's view (up to its far depth) is skipped. Voxels up to `guard` voxels outside
    the image read the nearest edge pixel (see SPAWN_GUARD_VOXELS).
    """
    runs = (len(tiles) + TILE_RUN - 1) // TILE_RUN
    # numba hands each thread one contiguous block of a prange (with the omp and workqueue layers, whatever
    # parallel_chunksize says), and parts of the scene differ in work (the walk's first frames see other
    # tiles than its last): so each thread takes every workers-th run. Integration went from 1.4 to 1.8 cores.
    for worker in numba.prange(workers):
        for run in range(worker, runs, workers):
            _integrate_run(tsdf, weight, colour, colour_weight, tiles, blocks, run * TILE_RUN,
                           min(len(tiles), (run + 1) * TILE_RUN), origin, voxel, truncation, w2c, K, depth, rgb,
                           guard, far)


@numba.njit(cache=True, fastmath=True)
def _integrate_run(tsdf, weight, colour, colour_weight, tiles, blocks, start, stop, origin, voxel, truncation, w2c,
                   K, depth, rgb, guard, far):
    """Every frame in turn over tiles[start:stop]: the run's voxels stay in cache while the frames pass."""
    frames, height, width = depth.shape
    half = (TILE - 1) / 2
    radius = voxel * half * math.sqrt(3.0)  # a tile's bounding sphere around its voxel centres
    for f in range(frames):
        view = w2c[f]
        fx, fy, cx, cy = K[f, 0, 0], K[f, 1, 1], K[f, 0, 2], K[f, 1, 2]
        # the frustum's planes, normal . p >= 0 inside, normals' lengths
        left, right = math.hypot(fx, cx), math.hypot(fx, width - cx)
        top, bottom = math.hypot(fy, cy), math.hypot(fy, height - cy)
        for n in range(start, stop):
            ti, tj, tk = tiles[n, 0], tiles[n, 1], tiles[n, 2]
            x0, y0, z0 = origin[0] + ti * TILE * voxel, origin[1] + tj * TILE * voxel, origin[2] + tk * TILE * voxel
            # camera coordinates of the tile's first voxel
            bx = view[0, 0] * x0 + view[0, 1] * y0 + view[0, 2] * z0 + view[0, 3]
            by = view[1, 0] * x0 + view[1, 1] * y0 + view[1, 2] * z0 + view[1, 3]
            bz = view[2, 0] * x0 + view[2, 1] * y0 + view[2, 2] * z0 + view[2, 3]
            # ... and of its centre: its bounding sphere must reach every plane's inner side
            mx = bx + half * voxel * (view[0, 0] + view[0, 1] + view[0, 2])
            my = by + half * voxel * (view[1, 0] + view[1, 1] + view[1, 2])
            mz = bz + half * voxel * (view[2, 0] + view[2, 1] + view[2, 2])
            if (fx * mx + cx * mz < -radius * left or (width - cx) * mz - fx * mx < -radius * right
                    or fy * my + cy * mz < -radius * top or (height - cy) * mz - fy * my < -radius * bottom
                    or mz < -radius or far[f] - mz < -radius):
                continue
            # one flat index per voxel instead of three (each would be checked for wrapping round)
            _integrate_tile(tsdf[ti, tj, tk].reshape(-1), weight[ti, tj, tk].reshape(-1),
                            colour[ti, tj, tk].reshape(-1, 3), colour_weight[ti, tj, tk].reshape(-1), blocks[n],
                            view, fx, fy, cx, cy, bx, by, bz, voxel, truncation, depth[f], rgb[f], guard[f])


@numba.njit(cache=True, fastmath=True)
def _integrate_tile(tile_tsdf, tile_weight, tile_colour, tile_colour_weight, blocks, view, fx, fy, cx, cy, bx, by,
                    bz, voxel, truncation, depth, rgb, guard):
    """Fold one frame into one tile's band blocks, voxel by voxel (camera coordinates of its first voxel: bx,
    by, bz)."""
    height, width = depth.shape
    one = np.float32(1.0)
    # Camera coordinates move by a constant step along each tile axis, so no matrix product per voxel. The steps
    # are rounded to float32, but numba promotes an integer index times a float32 to float64, so the loop
    # computes in float64 (an all-float32 loop measured no faster, and moves voxels across pixel edges).
    f32 = np.float32
    ax, ay, az = f32(view[0, 0] * voxel), f32(view[1, 0] * voxel), f32(view[2, 0] * voxel)
    sbx, sby, sbz = f32(view[0, 1] * voxel), f32(view[1, 1] * voxel), f32(view[2, 1] * voxel)
    sx, sy, sz = f32(view[0, 2] * voxel), f32(view[1, 2] * voxel), f32(view[2, 2] * voxel)
    bx, by, bz, fx, fy, cx, cy = f32(bx), f32(by), f32(bz), f32(fx), f32(fy), f32(cx), f32(cy)
    for block in range(8):
        if not blocks & (1 << block):
            continue
        a0, b0, c0 = (block >> 2) * BLOCK, (block >> 1 & 1) * BLOCK, (block & 1) * BLOCK
        for a in range(a0, a0 + BLOCK):
            for b in range(b0, b0 + BLOCK):
                px, py, pz = bx + a * ax + b * sbx, by + a * ay + b * sby, bz + a * az + b * sbz
                for c in range(c0, c0 + BLOCK):
                    i = (a * TILE + b) * TILE + c
                    zc = pz + c * sz
                    if zc <= 1e-6:
                        continue
                    inv = one / zc
                    u = fx * (px + c * sx) * inv + cx
                    v = fy * (py + c * sy) * inv + cy
                    if f32(0.0) <= u < width and f32(0.0) <= v < height:
                        row, col = int(v), int(u)  # the pixel whose area holds (u, v) (its centre is at +0.5)
                        d = depth[row, col]
                        if d <= 0.0:  # unknown depth says nothing: neither surface nor free space
                            continue
                    else:  # outside the image: only in the guard band, reading the nearest edge pixel
                        g = guard * voxel * fx * inv  # the guard band in pixels at this depth
                        if not (-g <= u < width + g and -g <= v < height + g):
                            continue
                        col = min(max(int(u), 0), width - 1)
                        row = min(max(int(v), 0), height - 1)
                        if depth[row, col] <= 0.0:
                            continue
                        outside_u, outside_v = not 0.0 <= u < width, not 0.0 <= v < height
                        d = _extrapolated(depth, row, col, u - col - 0.5 if outside_u else 0.0,
                                          v - row - 0.5 if outside_v else 0.0)
                        if d <= 0.0:
                            continue
                    sdf = d - zc
                    if sdf < -truncation:  # hidden behind the surface: unobserved
                        continue
                    # Stored as float32. A running mean moves towards the new value by 1 / (views so far + 1).
                    t = np.float32(min(1.0, sdf / truncation))
                    w = tile_weight[i]
                    tile_tsdf[i] += (t - tile_tsdf[i]) / (w + one)
                    tile_weight[i] = w + one
                    if t < one:  # the pixel's colour is this voxel's only near the surface the pixel shows
                        w = tile_colour_weight[i]
                        step = one / (w + one)
                        for ch in range(3):
                            tile_colour[i, ch] += (rgb[row, col, ch] - tile_colour[i, ch]) * step
                        tile_colour_weight[i] = w + one


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
    corners = mesh.vertices[faces]  # twice the areas, straight from the arrays: trimesh's cache costs more
    doubled = np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    area = np.bincount(face_labels, weights=doubled)
    keep = area[face_labels] >= MIN_COMPONENT_FRACTION * area.max()
    if keep.all():
        return mesh
    kept = faces[keep]
    used = np.zeros(n, bool)
    used[kept] = True
    remap = np.cumsum(used) - 1
    return trimesh.Trimesh(mesh.vertices[used], remap[kept], vertex_colors=mesh.visual.vertex_colors[used],
                           process=False)
