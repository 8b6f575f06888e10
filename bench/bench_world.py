"""World-quality benchmark: generators against ground truth rendered by Blender.

    .venv/bin/python bench/bench_world.py --quick                 # all scenes, layout + both baselines
    .venv/bin/python bench/bench_world.py --scenes room,plaza --generators layout,depth-true --presets walk_forward

For each scene (built by bench/world_scenes.py in Blender, Cycles on the CPU) and preset:
1. Camera 0 is rendered: that picture is the concept image every method gets.
2. The true camera path is the preset's motion (lyra_assets.motions.camera_path) on the TRUE scene: its depth
   ahead and its free space (clearance from the true mesh). Ground truth (colour, z-depth, poses) is rendered
   along it. Every method walks exactly these poses: generators through the public pipeline (`build` with
   the path as a trajectory file); if a generator's own free-space check shortens the path, the ground truth
   is rendered again along the path it walked (the record's `path_scale` says so), so frames always compare
   at identical poses.
   `layout-room` is the layout generator forced to its box room (`[layout] scene = "room"`): the box every
   picture got before open scenes were modelled, the reference the open cases must beat in the same run.
   `depth-true` is the depth generator with a labelled benchmark double for its depth model: the true
   scene's depth at any camera (rasterised from the true mesh), with the classical fill. It measures the
   generator's own parts (metric fit to the floor, spatial memory, fill) without weights on the machine.
3. Baselines are walkthroughs built here from frame 0 and fed to the same downstream stages
   (`lyra_assets.pipeline.mesh`): `flat` puts the image on one plane at the true median depth, `true-depth`
   lifts it with frame 0's true depth (the upper bound for any single-image method without hallucination).
4. Metrics (bench/world_metrics.py): first-view depth (AbsRel, delta<1.25, metric and median-scaled),
   PSNR/SSIM against the truth at 25/50/75/100 % of the path over all pixels and over pixels frame 0 did not
   see, Chamfer and F-score@10 cm between the GLB's LOD0 and the true mesh as seen from camera 0 (up to
   MAX_GEOMETRY_DEPTH), revisit PSNR (walk_and_return: frame i against frame N-1-i, the same pose), and wall
   time and peak RSS per stage (each job runs in its own process; RSS sampled every 20 ms).

Renders are cached in ~/.cache/lyra-assets/bench_world/<hash of scene script, scene, poses, settings>.
Results: a Markdown table on stdout, bench/results/bench_world.json (one record per scene x method x
preset) and bench/results/<scene>.png contact sheets (truth, then each method, per preset).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import igl
import numpy as np
import world_metrics as wm

from lyra_assets.generators import REGISTRY
from lyra_assets.generators.depth import DepthGenerator
from lyra_assets.generators.depth_models import RelativeDepth
from lyra_assets.images import ConceptImage
from lyra_assets.errors import LyraAssetsError
from lyra_assets.motions import FreeSpace, camera_path, keep_clear
from lyra_assets.pipeline import build, mesh
from lyra_assets.presets import load_preset
from lyra_assets.trajectory import CameraPath
from lyra_assets.walkthrough import Walkthrough

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SCENE_SCRIPT = HERE / "world_scenes.py"
RESULTS = HERE / "results"
CACHE = Path(os.environ.get("LYRA_ASSETS_BENCH_CACHE", Path.home() / ".cache" / "lyra-assets" / "bench_world"))
SCENES = ("room", "corridor", "street", "plaza", "landscape", "aerial", "object", "archway")
BASELINES = ("flat", "true-depth")
DOUBLES = ("depth-true",)  # generators run here with a benchmark double for their model (no weights needed)
BOX_ROOM = "layout-room"  # the layout generator forced to its room case: the box every image once got
MAX_GEOMETRY_DEPTH = 50.0  # metres: farther surfaces (distant mountains, the sky) are left out of Chamfer/F
MAX_PATH_DEPTH = 60.0  # metres: the depth ahead a preset's motion is scaled by is capped here


@dataclass(frozen=True)
class Settings:
    width: int
    height: int
    frames: int
    samples: int
    presets: tuple[str, ...]
    hfov: float = 60.0
    seed: int = 0
    threads: int = 2

    def assets(self, quick: bool) -> dict[str, Any]:
        """The asset stages' options: small in quick mode, the built-in defaults otherwise."""
        return {"assets": {"lod0_triangles": 40_000, "texture_size": 512, "lods": 2}} if quick else {}


QUICK = Settings(width=256, height=144, frames=9, samples=8, presets=("walk_and_return", "look_around"))
FULL = Settings(width=512, height=288, frames=33, samples=32,
                presets=("walk_forward", "walk_and_return", "look_around"))


# -- ground truth (Blender) -----------------------------------------------------------------------------------


@dataclass
class Truth:
    """The scene seen from some frames of a camera path: `index` says which (frame 0 and the scored ones)."""

    index: list[int]
    frames: np.ndarray  # (M, H, W, 3) uint8, one per entry of index
    depth: np.ndarray  # (M, H, W) float32, inf = sky
    path: CameraPath  # the whole path
    vertices: np.ndarray  # the true mesh in our world frame
    faces: np.ndarray
    info: dict[str, Any]

    def frame(self, i: int) -> np.ndarray:
        return self.frames[self.index.index(i)]

    def depth_at(self, i: int) -> np.ndarray:
        return self.depth[self.index.index(i)]


def blender_python() -> Path:
    path = Path(os.environ.get("LYRA_ASSETS_BLENDER_PYTHON") or REPO / ".venv-blender" / "bin" / "python")
    if not path.is_file():
        sys.exit(f"no Python with Blender as a module at {path}: python3.11 -m venv .venv-blender && "
                 ".venv-blender/bin/pip install bpy==5.0.1 (or set LYRA_ASSETS_BLENDER_PYTHON)")
    return path


def scored_frames(n_frames: int) -> list[int]:
    """Frame 0 (the concept image) and the frames the metrics look at."""
    return sorted({0, *wm.path_indices(n_frames)})


def render_truth(scene: str, path: CameraPath, settings: Settings, cache: Path = CACHE,
                 blender: Path | None = None) -> Truth:
    """The scene rendered from the scored frames of `path` (our world frame), from the cache when the same
    render was made before."""
    index = scored_frames(len(path))
    poses = path.c2w[index]
    key = hashlib.sha256(SCENE_SCRIPT.read_bytes() + json.dumps(
        [scene, settings.seed, settings.samples, path.width, path.height, path.K[0].round(6).tolist(),
         poses.round(6).tolist()]).encode()).hexdigest()[:20]
    folder = cache / f"{scene}-{key}"
    if not (folder / "depth.npz").exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=cache))  # its own: runs may share the cache
        np.savez(tmp / "poses.npz", c2w=poses)
        hfov = math.degrees(2 * math.atan(path.width / 2 / path.K[0, 0, 0]))
        run = subprocess.run(
            [str(blender or blender_python()), str(SCENE_SCRIPT), "--scene", scene, "--seed", str(settings.seed),
             "--out", str(tmp), "--poses", str(tmp / "poses.npz"), "--width", str(path.width),
             "--height", str(path.height), "--hfov", repr(hfov), "--samples", str(settings.samples),
             "--threads", str(settings.threads)], capture_output=True, text=True, check=False)
        if run.returncode != 0:
            raise RuntimeError(f"Blender failed on scene {scene}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
        try:
            tmp.rename(folder)
        except OSError:  # another run finished the same render first
            shutil.rmtree(tmp, ignore_errors=True)
    frames = np.stack([cv2.imread(str(f))[:, :, ::-1] for f in sorted((folder / "frames").glob("*.png"))])
    with np.load(folder / "mesh.npz") as m:
        vertices, faces = m["vertices"], m["faces"]
    with np.load(folder / "depth.npz") as d:
        depth = d["depth"]
    return Truth(index, frames, depth, path, vertices, faces, json.loads((folder / "camera0.json").read_text()))


def free_space(truth: Truth) -> FreeSpace:
    """What a perfect generator would report: the true depth ahead (median over the central tenth of frame 0,
    capped at MAX_PATH_DEPTH) and exact clearance from the true mesh (0 inside solids)."""
    d = truth.depth_at(0)
    h, w = d.shape
    centre = d[int(h * 0.45):int(h * 0.55) + 1, int(w * 0.45):int(w * 0.55) + 1]
    centre = centre[np.isfinite(centre)]
    depth = min(float(np.median(centre)) if len(centre) else MAX_PATH_DEPTH, MAX_PATH_DEPTH)
    V, F = np.ascontiguousarray(truth.vertices), np.ascontiguousarray(truth.faces)

    def clearance(points: np.ndarray) -> np.ndarray:
        points = np.ascontiguousarray(points, np.float64)
        sq, _, _ = igl.point_mesh_squared_distance(points, V, F)
        # Inside a solid (a column, a wall) is no free space, however far its surface is.
        inside = np.asarray(igl.winding_number(V, F, points)).ravel() > 0.5
        return np.where(inside, 0.0, np.sqrt(sq))

    return FreeSpace(depth=depth, centre=np.array([0.0, 0.0, depth / 2]), clearance=clearance)


def truth_path(preset_name: str, settings: Settings, first: Truth) -> tuple[CameraPath, dict]:
    """The preset's motion on the true scene. The free-space check runs on the preset's own (dense) frame
    count, so a fast quick-mode path cannot jump through a thin column between two of its few frames."""
    preset = load_preset(preset_name, overrides={
        "camera": {"width": settings.width, "height": settings.height, "hfov_deg": settings.hfov}})
    path, notes = camera_path(preset, free_space(first))
    return path.resampled(settings.frames), notes


# -- methods under test -----------------------------------------------------------------------------------------


class StageMonitor:
    """Wall time and peak RSS per pipeline stage, from the progress callback and /proc (sampled every 20 ms)."""

    def __init__(self) -> None:
        self.stage = "start"
        self.entered = time.perf_counter()
        self.wall: dict[str, float] = {}
        self.peak_mib: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def __call__(self, stage: str, done: int, total: int, message: str = "") -> None:
        if stage != self.stage:
            self._switch(stage)

    def _switch(self, stage: str) -> None:
        now = time.perf_counter()
        self.wall[self.stage] = self.wall.get(self.stage, 0.0) + now - self.entered
        self._sample_once()
        self.stage, self.entered = stage, now

    def _sample_once(self) -> None:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        self.peak_mib[self.stage] = max(self.peak_mib.get(self.stage, 0.0), rss)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self._sample_once()

    def finish(self) -> dict[str, dict[str, float]]:
        self._switch("end")
        self._stop.set()
        self._thread.join()
        stages = [s for s in self.wall if s not in ("start", "end")]
        return {s: {"wall_s": round(self.wall[s], 3), "peak_rss_mib": round(self.peak_mib.get(s, 0.0), 1)}
                for s in stages}


def run_generator(generator: str, image: Path, preset: str, trajectory: Path, out: Path, quick: bool,
                  settings: Settings) -> dict[str, Any]:
    """One generator through the public pipeline, in this (child) process."""
    monitor = StageMonitor()
    options = settings.assets(quick)
    if generator == BOX_ROOM:
        generator, options = "layout", {**options, "layout": {"scene": "room"}}
    result = build(image, preset=preset, out_dir=out, generator=generator, trajectory=trajectory,
                   options=options, force=True, progress=monitor)
    return {"glb": str(result.glb), "walkthrough": str(result.walkthrough_dir), "stages": monitor.finish()}


def run_baseline(baseline: str, truth: Truth, out: Path, quick: bool, settings: Settings) -> dict[str, Any]:
    """Frame 0 lifted by a known depth (true, or one plane at the true median), walked along the true path and
    meshed by the pipeline's own downstream stages. Where no surface is, frames show sky frame 0 saw, else
    frame 0's mean colour; depth there is 0 (unknown), so fusion ignores it."""
    monitor = StageMonitor()
    path, image = truth.path, truth.frame(0)
    depth0 = truth.depth_at(0)
    if baseline == "flat":
        depth0 = np.full_like(depth0, np.median(depth0[np.isfinite(depth0)]))
    monitor("generate", 0, len(path))
    vertices, faces = wm.depth_map_mesh(depth0, path.K[0], path.c2w[0])
    colours = image.reshape(-1, 3)
    frames, depth = [], []
    for i in range(len(path)):
        rgb, d = wm.render_coloured(vertices, faces, colours, path.K[i], path.c2w[i], path.width, path.height)
        frames.append(wm.fill_holes(rgb, d > 0, image, truth.depth_at(0), path.K[i], path.c2w[0], path.c2w[i]))
        depth.append(d)
        monitor("generate", i + 1, len(path))
    depth = np.stack(depth)
    info = {"generator": {"name": baseline, "version": "bench", "licence": "none: a benchmark baseline"}}
    walk = Walkthrough(np.stack(frames), depth, depth > 0, path, image, info)
    return meshed(walk, baseline, out, quick, settings, monitor)


def meshed(walk: Walkthrough, name: str, out: Path, quick: bool, settings: Settings,
           monitor: StageMonitor) -> dict[str, Any]:
    """A walkthrough made here, saved and turned into a GLB by the pipeline's own downstream stages."""
    folder = walk.save(out / name / "walkthrough", force=True)
    result = mesh(folder, out, name, options=settings.assets(quick), force=True, progress=monitor)
    return {"glb": str(result.glb), "walkthrough": str(folder), "stages": monitor.finish()}


class TrueMeshDepth:
    """BENCHMARK DOUBLE, not a model: the true scene's depth at the camera it is given, as a perfect depth
    model would give it (sky, where no surface is, very far)."""

    description = "benchmark double: the true scene's depth (rasterised from the true mesh)"

    def __init__(self, truth: Truth) -> None:
        self.vertices, self.faces = truth.vertices, truth.faces

    def __call__(self, rgb: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> RelativeDepth:
        depth, _, _ = wm.rasterise(self.vertices, self.faces, K, c2w, rgb.shape[1], rgb.shape[0])
        return RelativeDepth(np.where(np.isfinite(depth) & (depth > 0), depth, 1e6).astype(np.float32), "depth")


def run_depth_double(truth: Truth, preset_name: str, out: Path, quick: bool, settings: Settings) -> dict[str, Any]:
    """The depth generator with TrueMeshDepth for its model and the classical fill, along the true path (kept
    clear by the generator's own free-space check, as `build` does), meshed by the pipeline's own stages."""
    monitor = StageMonitor()
    preset = load_preset(preset_name, overrides={
        "camera": {"width": settings.width, "height": settings.height, "hfov_deg": settings.hfov}})
    generator = DepthGenerator(preset, {"licence": "none: a benchmark double"}, "bench",
                               depth_model=TrueMeshDepth(truth))
    image = truth.frame(0)
    concept = ConceptImage(image, "concept", hashlib.sha256(image.tobytes()).hexdigest())
    path, _ = keep_clear(truth.path, generator.survey(concept), preset.scene.margin_m)
    return meshed(generator.generate(concept, path, monitor), "depth-true", out, quick, settings, monitor)


def in_child(function, *args) -> dict[str, Any]:
    """Run one job in a fresh forked process, so its peak RSS is its own."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork")) as pool:
        return pool.submit(function, *args).result()


# -- metrics of one record -----------------------------------------------------------------------------------------


def score(walk: Walkthrough, truth: Truth, glb: Path, preset: str) -> dict[str, Any]:
    K, w, h, c2w = truth.path.K[0], truth.path.width, truth.path.height, truth.path.c2w
    record: dict[str, Any] = {"first_view_depth": wm.depth_metrics(walk.depth[0], truth.depth_at(0))}
    views = []
    for fraction, i in zip(wm.PATH_FRACTIONS, wm.path_indices(len(walk))):
        unseen = wm.unseen_mask(truth.depth_at(i), c2w[i], truth.depth_at(0), c2w[0], K)
        views.append({"fraction": fraction, "frame": i, "unseen_share": float(unseen.mean()),
                      "psnr": wm.psnr(walk.frames[i], truth.frame(i)),
                      "ssim": wm.ssim(walk.frames[i], truth.frame(i)),
                      "psnr_unseen": wm.psnr(walk.frames[i], truth.frame(i), unseen),
                      "ssim_unseen": wm.ssim(walk.frames[i], truth.frame(i), unseen)})
    record["views"] = views
    lod0 = wm.glb_lod0(glb)
    pred = wm.visible_points(lod0.vertices, lod0.faces, K, c2w[0], w, h, MAX_GEOMETRY_DEPTH)
    true = wm.visible_points(truth.vertices, truth.faces, K, c2w[0], w, h, MAX_GEOMETRY_DEPTH)
    record["geometry"] = {**wm.chamfer_fscore(pred, true, 0.10), "lod0_triangles": len(lod0.faces),
                          "max_depth_m": MAX_GEOMETRY_DEPTH}
    if preset == "walk_and_return":
        n = len(walk)
        pairs = [wm.psnr(walk.frames[i], walk.frames[n - 1 - i]) for i in range(n // 2)]
        record["revisit"] = {"psnr_mean": float(np.mean(pairs)), "psnr_first_last": pairs[0]}
    return record


# -- the run -------------------------------------------------------------------------------------------------------


def bench_scene(scene: str, methods: list[str], presets: list[str], settings: Settings, quick: bool,
                work: Path) -> tuple[list[dict[str, Any]], np.ndarray]:
    single = CameraPath(np.eye(4)[None], _K(settings), settings.width, settings.height)
    first = render_truth(scene, single, settings)
    concept = work / scene / "concept.png"
    concept.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(concept), first.frame(0)[:, :, ::-1])
    records, sheet_rows = [], []
    for preset in presets:
        path, notes = truth_path(preset, settings, first)
        started = time.perf_counter()
        truth = render_truth(scene, path, settings)
        truth_s = time.perf_counter() - started  # 0 when cached
        trajectory = work / scene / f"{preset}.npz"
        path.to_lyra_npz(trajectory)
        rows = [("truth", truth)]
        for method in methods:
            out = work / scene / preset / method
            try:
                if method in BASELINES:
                    job = in_child(run_baseline, method, truth, out, quick, settings)
                elif method in DOUBLES:
                    job = in_child(run_depth_double, truth, preset, out, quick, settings)
                else:
                    job = in_child(run_generator, method, concept, preset, trajectory, out, quick, settings)
            except LyraAssetsError as exc:  # a method that refuses a scene is a result too: a row that says why
                records.append({"scene": scene, "scene_kind": truth.info["kind"], "generator": method,
                                "preset": preset, "error": str(exc), "quick": quick})
                print(f"  {scene:<10} {preset:<16} {method:<11} refused: {exc}", file=sys.stderr, flush=True)
                continue
            walk = Walkthrough.load(job["walkthrough"])
            walked = truth
            scale = 1.0
            if not np.allclose(walk.path.c2w, truth.path.c2w, atol=1e-4):  # the generator shortened the path
                walked = render_truth(scene, walk.path, settings)
                scale = _reach(walk.path) / max(_reach(truth.path), 1e-9)
            record = {"scene": scene, "scene_kind": truth.info["kind"], "generator": method,
                      "baseline": method in BASELINES, "preset": preset,
                      "frames": len(walk), "width": walk.path.width, "height": walk.path.height,
                      "path": {**notes, "path_scale": round(scale, 4)},
                      **score(walk, walked, Path(job["glb"]), preset), "stages": job["stages"],
                      "truth_render_s": round(truth_s, 2), "quick": quick}
            records.append(record)
            if walked is not truth:
                rows.append((f"truth on {method}'s path", walked))
            rows.append((method, walk.frames))
            print(f"  {scene:<10} {preset:<16} {method:<11} {summary(record)}", file=sys.stderr, flush=True)
        sheet_rows.append((preset, rows))
    return records, contact_sheet(scene, sheet_rows)


def _reach(path: CameraPath) -> float:
    """How far the path gets from its first camera, metres."""
    return float(np.linalg.norm(path.centres - path.centres[0], axis=1).max())


def _K(settings: Settings) -> np.ndarray:
    f = (settings.width / 2) / math.tan(math.radians(settings.hfov) / 2)
    return np.array([[f, 0, settings.width / 2], [0, f, settings.height / 2], [0, 0, 1.0]])


def contact_sheet(scene: str, blocks: list[tuple[str, list[tuple[str, Any]]]]) -> np.ndarray:
    """Per preset: the truth (its first tile is the concept image) and each method, at 0/25/50/75/100 % of the
    path."""
    tiles = []
    for preset, rows in blocks:
        for label, frames in rows:
            is_truth = isinstance(frames, Truth)
            n = len(frames.path) if is_truth else len(frames)
            shown = [frames.frame(i) if is_truth else frames[i] for i in [0, *wm.path_indices(n)]]
            names = [f"{scene} / {preset}" if label == "truth" else f"{label} 0%"]
            names += [f"{label} {int(f * 100)}%" for f in wm.PATH_FRACTIONS]
            tiles.append(np.hstack([_label(image, name) for image, name in zip(shown, names)]))
    return np.vstack(tiles)


def _label(image: np.ndarray, text: str) -> np.ndarray:
    tile = np.ascontiguousarray(image.copy())
    cv2.rectangle(tile, (0, 0), (tile.shape[1] - 1, tile.shape[0] - 1), (255, 255, 255), 1)
    if text:
        cv2.putText(tile, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 2, cv2.LINE_AA)
        cv2.putText(tile, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


# -- reporting -------------------------------------------------------------------------------------------------------


def _f(x: Any, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x:.{digits}f}"


def summary(r: dict[str, Any]) -> str:
    d = r["first_view_depth"]
    return (f"AbsRel {_f(d['abs_rel'])} d1 {_f(d['delta1'])} | PSNR "
            + "/".join(_f(v["psnr"], 1) for v in r["views"])
            + f" | F@10cm {_f(r['geometry']['fscore'])}")


HEADER = ("| scene | method | preset | AbsRel | AbsRel med | δ<1.25 | δ<1.25 med | PSNR 25/50/75/100% | "
          "PSNR unseen 25/50/75/100% | SSIM 25/50/75/100% | SSIM unseen 25/50/75/100% | Chamfer m | F@10cm | "
          "revisit dB | path scale | time s | peak MiB |")


def table(records: list[dict[str, Any]]) -> str:
    lines = [HEADER, "|" + "---|" * (HEADER.count("|") - 1)]
    for r in records:
        if "error" in r:
            lines.append(f"| {r['scene']} | {r['generator']} | {r['preset']} | refused: {r['error']} |")
            continue
        d, g, v = r["first_view_depth"], r["geometry"], r["views"]
        revisit = r.get("revisit", {}).get("psnr_mean")
        wall = sum(s["wall_s"] for s in r["stages"].values())
        peak = max(s["peak_rss_mib"] for s in r["stages"].values())
        lines.append("| " + " | ".join([
            r["scene"], r["generator"], r["preset"], _f(d["abs_rel"]), _f(d["abs_rel_median"]), _f(d["delta1"]),
            _f(d["delta1_median"]), "/".join(_f(x["psnr"], 1) for x in v),
            "/".join(_f(x["psnr_unseen"], 1) for x in v), "/".join(_f(x["ssim"]) for x in v),
            "/".join(_f(x["ssim_unseen"]) for x in v), _f(g["chamfer_m"]), _f(g["fscore"]),
            _f(revisit, 1) if revisit is not None else "", _f(r["path"]["path_scale"]), _f(wall, 1), _f(peak, 0),
        ]) + " |")
    return "\n".join(lines)


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    return x


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", default=",".join(SCENES), help=f"comma-separated, of: {', '.join(SCENES)}")
    parser.add_argument("--generators", default="layout,depth-true",
                        help="comma-separated generator names (lyra_assets.generators.REGISTRY, or depth-true: the "
                             "depth generator on a true-depth double; layout-room: the layout generator forced to "
                             "its box room, the reference for open scenes), run next to the baselines flat and "
                             "true-depth")
    parser.add_argument("--presets", help="comma-separated preset names (default: walk_and_return,look_around "
                        "with --quick, else walk_forward,walk_and_return,look_around)")
    parser.add_argument("--quick", action="store_true", help="256x144, 9 frames, 8 samples, small LODs")
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--work", type=Path, help="folder for walkthroughs and GLBs (default: a temporary one)")
    args = parser.parse_args(argv)
    scenes = [s for s in args.scenes.split(",") if s]
    unknown = set(scenes) - set(SCENES)
    if unknown:
        parser.error(f"unknown scene(s) {', '.join(sorted(unknown))}; known: {', '.join(SCENES)}")
    settings = QUICK if args.quick else FULL
    generators = [g for g in args.generators.split(",") if g]
    known = set(REGISTRY) | set(DOUBLES) | {BOX_ROOM}
    if set(generators) - known:
        parser.error(f"unknown generator(s) {', '.join(sorted(set(generators) - known))}; "
                     f"known: {', '.join(sorted(known))}")
    methods = generators + ([] if args.no_baselines else list(BASELINES))
    presets = [p for p in (args.presets or ",".join(settings.presets)).split(",") if p]
    work = args.work or Path(os.environ.get("TMPDIR", "/tmp")) / f"lyra-bench-world-{os.getpid()}"
    args.results.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    records = []
    out = args.results / "bench_world.json"
    try:
        for scene in scenes:
            scene_records, sheet = bench_scene(scene, methods, presets, settings, args.quick, work)
            records += scene_records
            cv2.imwrite(str(args.results / f"{scene}.png"), sheet[:, :, ::-1])
            # Written after every scene, so a long run that stops early still leaves its numbers.
            out.write_text(json.dumps(_jsonable({"settings": vars(settings) | {"quick": args.quick},
                                                 "total_s": time.perf_counter() - started, "records": records}),
                                      indent=1))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - started
    print(table(records))
    cpu = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for f in ("ru_utime", "ru_stime"))
    print(f"\n{len(records)} records in {total:.0f} s wall, {cpu:.0f} s CPU (this process, Blender and the jobs: "
          f"on a busy machine the wall time grows, the CPU time does not); peak RSS of this process "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; JSON: {out}; contact sheets: "
          f"{args.results}/<scene>.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
