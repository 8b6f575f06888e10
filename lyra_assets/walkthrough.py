"""The generator's output: frames, metric depth, observed-vs-synthesised masks and cameras, as a plain folder.

Folder layout (version 2), readable by any tool:

    manifest.json        what made it: generator, versions, input hashes, resolved preset, timings, notes
    input.png            the concept image as the generator saw it (8-bit RGB, upright)
    frames/000000.png    one RGB frame per camera
    depth.npz            depth (N,H,W) float16, metres along the camera z axis, 0 = unknown; float16 keeps
                         11 significant bits: each value within 0.05 % of the float32 depth (0.5 mm per
                         metre), 0 stays exactly 0. A depth beyond float16's range (65504 m) is stored
                         float32 instead. Version 1 folders (float32 depth) read the same way.
    observed.npz         observed (N,H,W) bool: True where the pixel shows what the input image saw
    trajectory.npz       the cameras, in NVIDIA Lyra 2.0's layout (see trajectory.py)
    splats.ply           optional: the generator's 3D Gaussian splats, in this world frame (see splats.py)
    preview.mp4          H.264 preview of the frames
    labelled.png         optional: how the generator read the concept image (e.g. sky / ground / pop-ups)
    contact_sheet.png    input, a few frames and their depth at a glance
"""
from __future__ import annotations

import json
import os
import shutil
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import fpng
import numpy as np
from numpy.typing import DTypeLike

from .errors import LyraAssetsError
from .files import output_folder, write_atomically, write_json_atomically
from .splats import GaussianSplats, read_ply, write_ply
from .trajectory import CameraPath

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
DEPTH_RELATIVE_PRECISION = 2.0**-11  # float16 rounding: at most this fraction of the depth (module doc)
FLOAT16_MAX = 65504.0
FRAME_NAME = "{:06d}.png"


@dataclass
class Walkthrough:
    frames: np.ndarray  # (N, H, W, 3) uint8
    depth: np.ndarray  # (N, H, W) float32 metres, 0 = unknown
    observed: np.ndarray  # (N, H, W) bool
    path: CameraPath
    input_image: np.ndarray  # (h, w, 3) uint8, the concept image
    info: dict[str, Any] = field(default_factory=dict)  # becomes manifest.json
    splats: GaussianSplats | None = None  # a splat generator's Gaussians, in the same world frame and metres
    labelled: np.ndarray | None = None  # (h, w, 3) uint8: the generator's reading of the concept image, for eyes

    def __post_init__(self) -> None:
        n, h, w = len(self.path), self.path.height, self.path.width
        checks = [("frames", self.frames, (n, h, w, 3), np.uint8), ("depth", self.depth, (n, h, w), np.float32),
                  ("observed", self.observed, (n, h, w), np.bool_)]
        for name, array, shape, dtype in checks:
            if array.shape != shape or array.dtype != dtype:
                raise LyraAssetsError(
                    f"walkthrough {name}: expected {shape} {np.dtype(dtype).name} for {n} cameras at {w}x{h}, "
                    f"got {array.shape} {array.dtype.name}"
                )

    def __len__(self) -> int:
        return len(self.path)

    # -- writing ----------------------------------------------------------------------------------------

    def save(self, folder: str | Path, force: bool = False) -> Path:
        """Write the folder atomically (temporary name, then rename). Returns the final path."""
        folder = Path(folder)
        with output_folder(folder, force) as tmp:
            self.write_into(tmp)
        return folder

    def write_into(self, tmp: Path, earlier: Path | None = None, kept: int = 0) -> None:
        """Fill the empty folder `tmp`. The first `kept` frames and the input image are the files of the
        walkthrough folder `earlier`, hard-linked (copied where links are impossible), never encoded again:
        an extended walkthrough keeps its earlier frames byte for byte."""
        (tmp / "frames").mkdir()
        for i in range(kept):
            _link_or_copy(earlier / "frames" / FRAME_NAME.format(i), tmp / "frames" / FRAME_NAME.format(i))
        # zlib releases the GIL and x264 runs in its own process: write side by side (fpng holds the GIL, but
        # for under 3 ms a frame).
        with ThreadPoolExecutor(max_workers=max(3, os.cpu_count() or 1)) as pool:
            writes = [
                pool.submit(write_preview_mp4, tmp / "preview.mp4", self.frames, self.path.fps),
                pool.submit(_save_npz_fast, tmp / "depth.npz", depth=self.depth,
                            dtype=np.float16 if self.depth.max() <= FLOAT16_MAX else np.float32),
                pool.submit(_save_npz_fast, tmp / "observed.npz", observed=self.observed),
            ]
            writes += [pool.submit(_write_png, tmp / "frames" / FRAME_NAME.format(i), self.frames[i])
                       for i in range(kept, len(self))]
            for write in writes:
                write.result()
        if earlier is None:
            _write_png(tmp / "input.png", self.input_image)
        else:
            _link_or_copy(earlier / "input.png", tmp / "input.png")
        if self.labelled is not None:
            _write_png(tmp / "labelled.png", self.labelled)
        self.path.to_lyra_npz(tmp / "trajectory.npz")
        if self.splats is not None:
            write_ply(tmp / "splats.ply", self.splats)
        _write_png(tmp / "contact_sheet.png", contact_sheet(self))
        manifest = {"format": "lyra-assets walkthrough", "format_version": FORMAT_VERSION,
                    "frames": len(self), "width": self.path.width, "height": self.path.height,
                    "fps": self.path.fps, **self.info}
        write_json_atomically(tmp / "manifest.json", manifest)

    def save_in_background(self, folder: str | Path, force: bool = False) -> Future[Path]:
        """`save` on a thread of its own, so later stages need not wait for the files; the future's
        result() is the folder, or raises what the writer raised. The arrays must not change meanwhile.

        It runs at the build's own priority: at a lower one (nice 10 was tried) the stages got the cores first
        on an idle machine, but on a busy one (a daemon's other worker, CI) the writer starved and the build
        waited for it (41 frames beside two busy processes: 46.9 s against 20.3 s)."""
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="walkthrough-save")
        try:
            return pool.submit(self.save, folder, force)
        finally:
            pool.shutdown(wait=False)  # the thread ends with its one task

    # -- reading ----------------------------------------------------------------------------------------

    @staticmethod
    def recorded_key(folder: str | Path) -> str | None:
        """The job key the folder's manifest records (None if it records none)."""
        try:
            return json.loads((Path(folder) / "manifest.json").read_text(encoding="utf-8")).get("job_key")
        except (OSError, ValueError, AttributeError):
            return None

    @classmethod
    def load(cls, folder: str | Path) -> "Walkthrough":
        """Read a walkthrough folder, with an error naming the file for anything missing or inconsistent."""
        folder = Path(folder)
        if not folder.is_dir():
            raise LyraAssetsError(f"{folder}: not a walkthrough folder (run `lyra-assets generate` to make one)")
        for name in ("manifest.json", "trajectory.npz", "depth.npz", "frames", "input.png"):
            if not (folder / name).exists():
                raise LyraAssetsError(f"{folder / name}: missing from the walkthrough folder; regenerate it.")
        try:
            info = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        except ValueError as exc:
            raise LyraAssetsError(f"{folder / 'manifest.json'}: not valid JSON ({exc})") from exc
        version = info.get("format_version", 1)
        if version not in READABLE_VERSIONS:
            raise LyraAssetsError(f"{folder / 'manifest.json'}: walkthrough format version {version}; this "
                                  f"lyra-assets reads versions {READABLE_VERSIONS}: update lyra-assets")
        path = CameraPath.from_lyra_npz(folder / "trajectory.npz", fps=float(info.get("fps", 16.0)))
        frame_files = sorted((folder / "frames").glob("*.png"))
        if len(frame_files) != len(path):
            raise LyraAssetsError(
                f"{folder / 'frames'}: {len(frame_files)} frames but trajectory.npz has {len(path)} cameras"
            )
        frames = np.stack([_read_rgb(f, path.width, path.height) for f in frame_files])
        depth = _load_array(folder / "depth.npz", "depth", (len(path), path.height, path.width)).astype(np.float32)
        bad = ~np.isfinite(depth) | (depth < 0)
        if bad.any():
            raise LyraAssetsError(
                f"{folder / 'depth.npz'}: {int(bad.sum())} depth values are NaN, infinite or negative; "
                "depth must be metres >= 0 (0 = unknown)"
            )
        if not (depth > 0).any():
            raise LyraAssetsError(f"{folder / 'depth.npz'}: no valid depth at all (every value is 0 = unknown)")
        observed_file = folder / "observed.npz"
        observed = (_load_array(observed_file, "observed", depth.shape).astype(bool) if observed_file.exists()
                    else np.ones(depth.shape, dtype=bool))
        input_image = _read_rgb(folder / "input.png")
        splats = read_ply(folder / "splats.ply") if (folder / "splats.ply").exists() else None
        labelled = _read_rgb(folder / "labelled.png") if (folder / "labelled.png").exists() else None
        known = ("format", "format_version", "frames", "width", "height", "fps")
        return cls(frames, depth, observed, path, input_image, {k: v for k, v in info.items() if k not in known},
                   splats, labelled)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links
        shutil.copy2(source, target)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    """An (H, W, 3) uint8 RGB image as a PNG, with fpng: lossless, 5.7x less CPU than OpenCV's zlib encoder
    for 4 % larger files (2.6 ms against 14.7 ms an 832x480 frame: 1.5 s of CPU saved at 121 frames)."""
    path.write_bytes(fpng.from_ndarray(np.ascontiguousarray(rgb)))


def _save_npz_fast(path: Path, dtype: DTypeLike | None = None, **arrays: np.ndarray) -> None:
    """np.savez_compressed at zlib level 1 (several times faster than the default level, nearly as small),
    each array stored as `dtype` if given. Written one frame (first index) at a time, so a conversion never
    copies the whole array."""

    def write(f):
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            for key, value in arrays.items():
                stored = np.dtype(dtype or value.dtype).newbyteorder("<")
                header = {"descr": np.lib.format.dtype_to_descr(stored), "fortran_order": False,
                          "shape": value.shape}
                with zf.open(f"{key}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array_header_1_0(member, header)
                    for frame in value:
                        member.write(np.ascontiguousarray(frame, stored).tobytes())

    write_atomically(path, write)


def _load_array(path: Path, key: str, shape: tuple[int, ...]) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as data:
            array = data[key]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise LyraAssetsError(f"{path}: cannot read array {key!r} ({exc}); regenerate the walkthrough.") from exc
    if array.shape != shape:
        raise LyraAssetsError(f"{path}: {key} has shape {array.shape}, expected {shape} to match the cameras")
    return array


def _read_rgb(path: Path, width: int | None = None, height: int | None = None) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise LyraAssetsError(f"{path}: unreadable image; regenerate the walkthrough.")
    if width is not None and image.shape[:2] != (height, width):
        raise LyraAssetsError(f"{path}: {image.shape[1]}x{image.shape[0]} but the cameras are {width}x{height}")
    return np.ascontiguousarray(image[:, :, ::-1])


def write_preview_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
    """H.264 (yuv420p, so every player opens it) through the ffmpeg binary that imageio-ffmpeg ships."""
    import imageio_ffmpeg

    height, width = frames.shape[1:3]
    even = frames[:, : height - height % 2, : width - width % 2]  # yuv420p needs even sides
    tmp = path.with_name(f".{path.stem}.tmp.mp4")
    writer = imageio_ffmpeg.write_frames(
        str(tmp), (even.shape[2], even.shape[1]), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
        macro_block_size=1, quality=7, ffmpeg_log_level="error",
        # ultrafast: a third of veryfast's CPU (0.5 s against 1.3 s at 121 frames) for a preview of 1.6 MB, not 0.6
        output_params=["-preset", "ultrafast", "-movflags", "+faststart"],
    )
    writer.send(None)
    for frame in even:
        writer.send(np.ascontiguousarray(frame))
    writer.close()
    tmp.replace(path)


def depth_to_colour(depth: np.ndarray, far: float | None = None) -> np.ndarray:
    """Depth (H, W) as an RGB image (near = bright, unknown = black), for eyes only."""
    if far is None:
        far = float(np.percentile(depth[depth > 0], 99)) if (depth > 0).any() else 1.0
    scaled = np.clip(255 * (1 - depth / far), 0, 255).astype(np.uint8)
    coloured = cv2.applyColorMap(scaled, cv2.COLORMAP_TURBO)[:, :, ::-1]
    coloured[depth <= 0] = 0
    return coloured


def contact_sheet(walk: Walkthrough, columns: int = 5, tile_width: int = 320) -> np.ndarray:
    """Input image (over the generator's labelling, if any), then `columns` evenly spaced frames over their
    depth and observed mask."""
    h, w = walk.path.height, walk.path.width
    tile_h = round(tile_width * h / w)
    idx = np.linspace(0, len(walk) - 1, columns).round().astype(int)
    shown = walk.depth[idx]  # the scale from the frames shown: memory for a few frames, not the whole walk
    far = float(np.percentile(shown[shown > 0], 99)) if (shown > 0).any() else 1.0

    def tile(image: np.ndarray) -> np.ndarray:
        return cv2.resize(image, (tile_width, tile_h), interpolation=cv2.INTER_AREA)

    shaded = [np.where(walk.observed[i][:, :, None], walk.frames[i], walk.frames[i] // 3 + 80) for i in idx]
    rows = [
        np.hstack([tile(walk.frames[i]) for i in idx]),
        np.hstack([tile(depth_to_colour(walk.depth[i], far)) for i in idx]),
        np.hstack([tile(s.astype(np.uint8)) for s in shaded]),
    ]
    grid = np.vstack(rows)
    ih, iw = walk.input_image.shape[:2]
    input_h = grid.shape[0]
    shown = [walk.input_image] if walk.labelled is None else [walk.input_image, walk.labelled]
    tile_h = input_h // len(shown)
    input_w = round(iw * tile_h / ih)
    input_tile = np.vstack([cv2.resize(image, (input_w, tile_h), interpolation=cv2.INTER_AREA) for image in shown]
                           + [np.zeros((input_h - tile_h * len(shown), input_w, 3), np.uint8)])
    sheet = np.hstack([input_tile, np.full((input_h, 8, 3), 255, np.uint8), grid])
    if walk.labelled is not None:
        cv2.putText(sheet, "labelling", (6, tile_h + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
                    cv2.LINE_AA)
    for col, i in enumerate(idx):
        x = input_tile.shape[1] + 8 + col * tile_width + 6
        cv2.putText(sheet, f"frame {i}", (x, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    cv2.putText(sheet, "input", (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return sheet
