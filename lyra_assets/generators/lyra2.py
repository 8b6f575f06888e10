"""NVIDIA Lyra 2.0 as a generator: its two inference scripts run as subprocesses, read back as Gaussian splats.

Lyra 2.0 (github.com/nv-tlabs/lyra, folder Lyra-2; code Apache-2.0, model weights under NVIDIA's research-only
licence) needs an 80 GB GPU, its repository and its checkpoints. What this module does with it:

1. Prepares Lyra's inputs in a work folder: `first_frame.png` (the concept image centre-cropped to 832:480,
   then resized to 832x480: Lyra resizes without cropping), `trajectory.npz` (our camera path, with the
   intrinsics of that crop, 1 + 80k frames) and `captions.json` (the job's prompt for every 80-frame chunk,
   or a caption file next to the image).
2. Runs `lyra2_custom_traj_inference` (the video) and `vipe_da3_gs_recon` (or its chunked variant: splats
   and camera estimates from the video) from the Lyra-2 folder, streaming their output into our progress
   callback and `lyra2.log`. The work folder is named by a hash of those inputs and settings, and a step
   whose output is already there is not run again: a rerun after a crash, or with other asset settings,
   costs no GPU time.
3. Reads back the video, the splat PLY and `cameras.npz`, fits the reconstruction's cameras to our path
   (splats.fit_cameras), prunes floaters, renders the splats' depth at our cameras and returns a
   Walkthrough that the mesh stages take as they take any other.

Units. Lyra reads the trajectory's translations in units of the first frame's estimated depth (times
`pose_scale`), so `survey` reports a scene depth of 1 and the preset's motion arrives in those units; no
free-space check is possible before generating. The reconstruction's pose estimator (ViPE with metric
depth) works in metres. The walkthrough therefore takes its frame from our path (world = first camera,
OpenCV axes) and its scale from the reconstruction: our path scaled by the fitted metres per unit.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .. import __version__
from ..errors import LyraAssetsError
from ..files import write_atomically, write_json_atomically
from ..images import ConceptImage
from ..motions import FreeSpace
from ..presets import Preset
from ..progress import Progress
from ..settings import validated
from ..splats import Similarity, fit_cameras, observed_from_first_view, prune, read_ply, render_path
from .lyra2_cameras import read_lyra_cameras
from ..trajectory import LYRA_CHUNK, CameraPath, intrinsics_from_fov, lyra_frame_count, read_lyra_captions
from ..walkthrough import Walkthrough

LYRA_WIDTH, LYRA_HEIGHT = 832, 480  # Lyra 2.0's native frame size
GENERATE_MODULE = "lyra_2._src.inference.lyra2_custom_traj_inference"
RECONSTRUCT_MODULE = "lyra_2._src.inference.vipe_da3_gs_recon"
CHUNKED_RECONSTRUCT_MODULE = "lyra_2._src.inference.vipe_da3_chunked_gs_recon"
# Importable packages Lyra's own installation check (Lyra-2/INSTALL.md) expects besides torch.
LYRA_PACKAGES = ("flash_attn", "transformer_engine", "vipe_ext", "depth_anything_3", "moge")
MODEL_LICENCE = ("Lyra 2.0 model weights: NVIDIA Internal Scientific Research and Development Model License "
                 "(research use only; https://www.nvidia.com/en-us/agreements/enterprise-software/"
                 "nvidia-internal-scientific-research-and-development-model-license/). Lyra 2.0 code: Apache-2.0.")
NOTICE = "Lyra 2.0 model weights are licensed by NVIDIA for research use only (see the manifest's model licence)."
CHECKPOINTS_HELP = ("download them from the Lyra-2 folder with `huggingface-cli download nvidia/Lyra-2.0 "
                    "--include 'checkpoints/*' --local-dir .` (see Lyra-2/README.md)")
ENVIRONMENT = {"root": "LYRA2_ROOT", "checkpoints": "LYRA2_CHECKPOINTS", "python": "LYRA2_PYTHON",
               "work_dir": "LYRA2_WORK_DIR"}
_TQDM = re.compile(r"\|\s*(\d+)/(\d+)\s*\[")  # "42%|████      | 21/50 [00:03<00:04, ...]"


class Lyra2Settings(BaseModel):
    """The sidecar's `[lyra2]` table; the four locations also come from LYRA2_* environment variables."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    root: Path | None = Field(None, description="the Lyra-2 folder of a clone of github.com/nv-tlabs/lyra")
    checkpoints: Path | None = Field(None, description="model checkpoint folder [ROOT/checkpoints/model]")
    python: str | None = Field(None, description="the Python of Lyra's environment [this Python]")
    work_dir: Path | None = Field(None, description="where Lyra's inputs and outputs are kept "
                                                    "[~/.cache/lyra-assets/lyra2]")
    use_dmd: bool = Field(False, description="Lyra's 4-step distilled sampler: faster, a little softer")
    num_retrieval_views: int | None = Field(None, ge=1, description="past views Lyra retrieves per chunk")
    pose_scale: float = Field(1.1, gt=0.0, le=100.0, description="Lyra's scale on the trajectory's translations")
    chunked_reconstruction: bool = Field(False, description="reconstruct long videos in overlapping chunks")
    num_chunks: int = Field(2, ge=1)
    chunk_size: int = Field(128, ge=2)
    chunk_overlap: int = Field(10, ge=0)
    frame_stride: int = Field(1, ge=1, description="every n-th video frame goes into the walkthrough")
    frames: Literal["video", "splats"] = Field("video", description="walkthrough colour: Lyra's video or "
                                                                    "the splats rendered")
    renderer: Literal["auto", "gsplat", "cpu"] = Field("auto", description="gsplat on CUDA, or the torch CPU "
                                                                           "fallback")
    min_opacity: float = Field(0.05, ge=0.0, lt=1.0, description="prune Gaussians fainter than this")
    max_scale_factor: float = Field(20.0, gt=1.0, description="prune Gaussians this many times the median size")
    min_alpha: float = Field(0.5, gt=0.0, le=1.0, description="depth only where the splats cover this much")
    min_gpu_memory_gb: float = Field(80.0, ge=0.0, description="refuse GPUs with less memory (decimal GB)")

    @classmethod
    def from_sources(cls, table: dict[str, Any], environ: dict[str, str], source: str) -> Lyra2Settings:
        """The sidecar table, with the LYRA2_* environment variables for locations it does not set."""
        merged = {key: environ[var] for key, var in ENVIRONMENT.items() if environ.get(var)}
        merged.update(table)
        return validated(cls, merged, source, "[lyra2]")


class Lyra2Generator:
    name = "lyra2"
    summary = "NVIDIA Lyra 2.0 (80 GB GPU, research-only weights), through its inference scripts"
    licence = MODEL_LICENCE
    notice = NOTICE  # printed by the CLI before a run
    needs_gpu = True  # the Ray executor runs it on a GPU worker
    takes_prompt = True
    operator_only = tuple(ENVIRONMENT)  # locations: from whoever runs it, never from a dropped sidecar
    settings_model = Lyra2Settings

    def __init__(self, preset: Preset, settings: dict[str, Any], source: str = "settings") -> None:
        self.settings = Lyra2Settings.from_sources(settings, dict(os.environ), source)
        self.preset = preset
        self.prompt: str | None = None
        self.image_path: Path | None = None
        self._environment: dict[str, Any] | None = None

    def set_text(self, prompt: str | None, image_path: Path | None) -> None:
        """The job's prompt, and the concept image's file (a caption file next to it is the alternative)."""
        self.prompt, self.image_path = prompt, image_path

    # -- the Generator interface ------------------------------------------------------------------------

    def survey(self, image: ConceptImage) -> FreeSpace:
        """Lyra's units: the first frame's depth is 1. Checks the installation first, so it fails early."""
        self.check_environment()
        return FreeSpace(depth=1.0, centre=np.array([0.0, 0.0, 0.5]), clearance=None)

    def generate(self, image: ConceptImage, path: CameraPath, progress: Progress,
                 memory: Walkthrough | None = None) -> Walkthrough:
        if memory is not None:
            raise LyraAssetsError("lyra2: Lyra 2.0's scripts start every world from the concept image alone; "
                                  "extending a walkthrough needs the layout or depth generator")
        started = time.perf_counter()
        environment = self.check_environment()
        s = self.settings
        lyra_path, path_notes = lyra_camera_path(path, self.preset.camera.hfov_deg, image.width, image.height)
        captions, caption_source = self.captions(len(lyra_path))
        first = first_frame(image.pixels)
        work = self.work_folder(image, first, lyra_path, captions)
        write_atomically(work / "first_frame.png", lambda f: f.write(cv2.imencode(".png", first[:, :, ::-1])[1]))
        lyra_path.to_lyra_npz(work / "trajectory.npz")
        write_json_atomically(work / "captions.json", {str(k): v for k, v in sorted(captions.items())})
        video = work / "out" / "first_frame.mp4"  # Lyra names the video after its input image
        recon = video.with_name(f"{video.stem}_gs_ours")  # and the reconstruction after the video
        commands = [generation_command(s, self.python, self.checkpoints, work, len(lyra_path)),
                    reconstruction_command(s, self.python, video)]
        timings = self._run_lyra(zip(("lyra2 generate", "lyra2 reconstruct"), commands, (video, recon / ".done")),
                                 work / "lyra2.log", progress)

        keep = np.arange(0, len(lyra_path), s.frame_stride)
        video_frames, video_size = read_video(video, len(lyra_path), keep)
        splats, pruning = prune(read_ply(recon / "reconstructed_scene.ply"), s.min_opacity, s.max_scale_factor)
        cameras = read_lyra_cameras(recon / "cameras.npz", len(lyra_path), lyra_path.c2w)
        # The fit takes the reconstruction's frame onto our path, in Lyra's units. Without its scale, it puts
        # the splats in our path's frame at the reconstruction's metric scale, and our path is scaled to match.
        alignment = fit_cameras(cameras.c2w, lyra_path.c2w[cameras.frames])
        fit = alignment.transform
        metres_per_unit = 1.0 / fit.scale
        splats = splats.transformed(Similarity(1.0, fit.rotation, fit.translation * metres_per_unit))
        at_video_size = video_camera_path(lyra_path, video_size)
        c2w = at_video_size.c2w[keep]
        c2w[:, :3, 3] *= metres_per_unit
        walk_path = CameraPath(c2w, at_video_size.K[keep], at_video_size.width, at_video_size.height,
                               at_video_size.fps)

        rendered = render_path(splats, walk_path, s.renderer, min_alpha=s.min_alpha, progress=progress)
        if not (rendered.depth > 0).any():
            raise LyraAssetsError(f"the splats in {recon} cover none of the walkthrough's pixels: the "
                                  "reconstruction does not match the path; see its gs_trajectory.mp4")
        frames = video_frames if s.frames == "video" else rendered.frames
        observed = observed_from_first_view(rendered.depth, walk_path)
        timings["generate"] = round(time.perf_counter() - started, 3)
        lyra = {"work_dir": str(work), "commands": commands, "environment": environment,
                "settings": s.model_dump(mode="json"), "captions": caption_source, "path": path_notes,
                "video_frames": len(lyra_path), "walkthrough_frames": keep.tolist(), "frames_from": s.frames,
                "renderer": rendered.renderer, "cameras": cameras.source, "pruning": pruning,
                "gaussians": len(splats),
                "alignment": {**alignment.notes(), "metres_per_trajectory_unit": round(metres_per_unit, 8)}}
        info = {"generator": {"name": self.name, "version": __version__, "licence": self.licence,
                              "notice": self.notice, "lyra2": lyra},
                "timings_s": timings}
        return Walkthrough(frames, rendered.depth, observed, walk_path, image.pixels, info, splats=splats)

    def _run_lyra(self, steps, log: Path, progress: Progress) -> dict[str, float]:
        """Run each (stage, command, output) whose output is not there yet; their timings."""
        timings = {}
        for stage, command, output in steps:
            if output.exists():
                progress(stage, 1, 1, f"reusing {output}")
                continue
            begun = time.perf_counter()
            run_streaming(command, self.root, log, stage, progress)
            timings[stage.replace(" ", "_")] = round(time.perf_counter() - begun, 3)
            if not output.exists():
                raise LyraAssetsError(f"Lyra 2.0 finished `{stage}` without writing {output}; see {log}")
        return timings

    # -- settings and inputs ----------------------------------------------------------------------------

    @property
    def root(self) -> Path:
        if self.settings.root is None:
            raise LyraAssetsError("lyra2: where is Lyra 2.0? Set LYRA2_ROOT where lyra-assets runs (or root in "
                                  "the [lyra2] table of a command-line sidecar, or of a drop folder's "
                                  "defaults.toml: a dropped sidecar may not set it) to the Lyra-2 folder of "
                                  "`git clone --recursive https://github.com/nv-tlabs/lyra`")
        return self.settings.root.expanduser().resolve()

    @property
    def checkpoints(self) -> Path:
        given = self.settings.checkpoints
        return given.expanduser().resolve() if given is not None else self.root / "checkpoints" / "model"

    @property
    def python(self) -> str:
        return self.settings.python or sys.executable

    def check_environment(self) -> dict[str, Any]:
        """Fail early, naming what to install or set: the Lyra-2 folder, its checkpoints, its Python with
        torch and Lyra's packages, a CUDA GPU with enough memory. Runs once per generator."""
        if self._environment is not None:
            return self._environment
        root = self.root
        modules = [GENERATE_MODULE, CHUNKED_RECONSTRUCT_MODULE if self.settings.chunked_reconstruction
                   else RECONSTRUCT_MODULE]
        for module in modules:
            script = root / (module.replace(".", "/") + ".py")
            if not script.is_file():
                raise LyraAssetsError(f"lyra2: {script} is missing: {root} is not the Lyra-2 folder of a current "
                                      "clone of https://github.com/nv-tlabs/lyra (set LYRA2_ROOT)")
        if not self.checkpoints.is_dir() or not any(self.checkpoints.iterdir()):
            raise LyraAssetsError(f"lyra2: no model checkpoints in {self.checkpoints}; {CHECKPOINTS_HELP}, or set "
                                  "LYRA2_CHECKPOINTS")
        # Lyra's scripts read these relative to the Lyra-2 folder, whatever --checkpoint_dir says.
        for needed in ("checkpoints/text_encoder/negative_prompt.pt", "checkpoints/recon/model.pt"):
            if not (root / needed).is_file():
                raise LyraAssetsError(f"lyra2: {root / needed} is missing; {CHECKPOINTS_HELP}")
        report = probe_python(self.python, root)
        if "torch_error" in report:
            raise LyraAssetsError(f"lyra2: {self.python} cannot import torch ({report['torch_error']}); set "
                                  "LYRA2_PYTHON to the Python of Lyra's environment (Lyra-2/INSTALL.md)")
        if not report.get("cuda"):
            raise LyraAssetsError(f"lyra2: torch {report.get('torch')} in {self.python} sees no CUDA GPU; Lyra 2.0 "
                                  f"needs an NVIDIA GPU with {self.settings.min_gpu_memory_gb:g} GB (H100/A100 "
                                  "80GB): run on a GPU box or a Ray GPU worker")
        gpu = report["gpu"]
        if gpu["memory_bytes"] < self.settings.min_gpu_memory_gb * 1e9:
            raise LyraAssetsError(f"lyra2: {gpu['name']} has {gpu['memory_bytes'] / 1e9:.0f} GB; Lyra 2.0 needs "
                                  f"{self.settings.min_gpu_memory_gb:g} GB of GPU memory (set min_gpu_memory_gb "
                                  "in [lyra2] to try anyway)")
        if report["missing"]:
            raise LyraAssetsError(f"lyra2: {self.python} lacks Lyra's packages {', '.join(report['missing'])}; "
                                  "install Lyra's environment as Lyra-2/INSTALL.md describes")
        self._environment = {"python": self.python, "torch": report["torch"], "gpu": gpu["name"],
                             "gpu_memory_gb": round(gpu["memory_bytes"] / 1e9, 1)}
        return self._environment

    def captions(self, n_frames: int) -> tuple[dict[int, str], str]:
        """Lyra's captions, keyed by chunk start: the job's prompt, or `<image>.txt` / `<image>.captions.json`
        next to the image (one caption, or Lyra's own per-chunk layout). Returns (captions, where from)."""
        files = []
        if self.image_path is not None:
            files = [f for f in (self.image_path.with_suffix(".txt"), self.image_path.with_suffix(".captions.json"))
                     if f.is_file()]
        if self.prompt is not None and files:
            raise LyraAssetsError(f"lyra2: both a prompt in the sidecar and {files[0]} give the captions; keep one")
        if len(files) > 1:
            raise LyraAssetsError(f"lyra2: both {files[0].name} and {files[1].name} are next to the image; keep one")
        starts = [0] + list(range(1 + LYRA_CHUNK, n_frames, LYRA_CHUNK))
        if self.prompt is not None:
            text, source = self.prompt, "prompt"
        elif files and files[0].suffix == ".txt":
            text, source = files[0].read_text(encoding="utf-8").strip(), str(files[0])
        elif files:
            captions = read_lyra_captions(files[0])
            if 0 not in captions:
                raise LyraAssetsError(f"{files[0]}: Lyra's captions need one for frame 0 (keys are the chunks' "
                                      f"first frames: {', '.join(map(str, starts[:4]))}, ...)")
            return captions, str(files[0])
        else:
            where = f" or put {self.image_path.with_suffix('.txt').name} next to the image" if self.image_path else ""
            raise LyraAssetsError(f"lyra2: Lyra 2.0 needs a text prompt: set prompt = \"...\" in the sidecar{where}")
        if not text:
            raise LyraAssetsError(f"lyra2: the caption from {source} is empty")
        return {k: text for k in starts}, source

    def work_folder(self, image: ConceptImage, first: np.ndarray, path: CameraPath,
                    captions: dict[int, str]) -> Path:
        """A folder named by everything Lyra's outputs depend on, so finished steps are found again."""
        s = self.settings
        root = s.work_dir or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lyra-assets" / "lyra2"
        digest = hashlib.sha256()
        for part in (first.tobytes(), path.c2w.astype(np.float32).tobytes(), path.K.astype(np.float32).tobytes(),
                     json.dumps([sorted(captions.items()), str(self.checkpoints), s.use_dmd, s.num_retrieval_views,
                                 s.pose_scale, s.chunked_reconstruction, s.num_chunks, s.chunk_size,
                                 s.chunk_overlap]).encode()):
            digest.update(part)
        label = re.sub(r"[^\w.-]+", "_", image.name)[:40]  # for people browsing the cache; the hash decides
        folder = Path(root).expanduser().resolve() / f"{label}-{digest.hexdigest()[:16]}"
        (folder / "out").mkdir(parents=True, exist_ok=True)
        return folder


# -- Lyra's inputs --------------------------------------------------------------------------------------


def first_frame(pixels: np.ndarray) -> np.ndarray:
    """The concept image centre-cropped to 832:480 and resized to 832x480 (Lyra resizes without cropping)."""
    x0, y0, w, h = _crop_box(pixels.shape[1], pixels.shape[0])
    crop = pixels[y0:y0 + h, x0:x0 + w]
    shrink = w > LYRA_WIDTH
    return cv2.resize(crop, (LYRA_WIDTH, LYRA_HEIGHT), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def _crop_box(width: int, height: int) -> tuple[int, int, int, int]:
    """x0, y0, w, h of the largest centred 832:480 crop."""
    if width * LYRA_HEIGHT > height * LYRA_WIDTH:
        w = round(height * LYRA_WIDTH / LYRA_HEIGHT)
        return (width - w) // 2, 0, w, height
    h = round(width * LYRA_HEIGHT / LYRA_WIDTH)
    return 0, (height - h) // 2, width, h


def first_frame_intrinsics(hfov_deg: float, width: int, height: int) -> np.ndarray:
    """K of first_frame(): the concept image's intrinsics carried through the crop and the resize."""
    K = intrinsics_from_fov(hfov_deg, width, height)
    x0, y0, w, h = _crop_box(width, height)
    sx, sy = LYRA_WIDTH / w, LYRA_HEIGHT / h
    return np.array([[K[0, 0] * sx, 0.0, (K[0, 2] - x0) * sx], [0.0, K[1, 1] * sy, (K[1, 2] - y0) * sy],
                     [0.0, 0.0, 1.0]])


def lyra_camera_path(path: CameraPath, hfov_deg: float, image_width: int,
                     image_height: int) -> tuple[CameraPath, dict[str, Any]]:
    """The path Lyra is given: our poses at 1 + 80k frames, with the first frame's real intrinsics at 832x480.

    Every frame gets the first frame's intrinsics: Lyra's video keeps the field of view of its input.
    """
    notes: dict[str, Any] = {"requested_frames": len(path)}
    if len(path) != lyra_frame_count(len(path)):
        path = path.with_lyra_frame_count()
        notes["resampled_to"] = len(path)
    K = first_frame_intrinsics(hfov_deg, image_width, image_height)
    notes["intrinsics"] = K.round(4).tolist()
    notes["crop"] = list(_crop_box(image_width, image_height))
    return CameraPath(path.c2w, K, LYRA_WIDTH, LYRA_HEIGHT, path.fps), notes


def video_camera_path(path: CameraPath, size: tuple[int, int]) -> CameraPath:
    """The path at the video's actual size, intrinsics scaled as Lyra scales them (per axis)."""
    width, height = size
    K = path.K.copy()
    K[:, 0] *= width / path.width
    K[:, 1] *= height / path.height
    return CameraPath(path.c2w, K, width, height, path.fps)


# -- Lyra's command lines -------------------------------------------------------------------------------


def generation_command(s: Lyra2Settings, python: str, checkpoints: Path, work: Path, n_frames: int) -> list[str]:
    command = [python, "-m", GENERATE_MODULE,
               "--input_image_path", str(work / "first_frame.png"),
               "--trajectory_path", str(work / "trajectory.npz"),
               "--captions_path", str(work / "captions.json"),
               "--experiment", "lyra2",
               "--checkpoint_dir", str(checkpoints),
               "--num_frames", str(n_frames),
               "--output_path", str(work / "out"),
               "--pose_scale", repr(s.pose_scale)]
    if s.use_dmd:
        command.append("--use_dmd")
    if s.num_retrieval_views is not None:
        command += ["--num_retrieval_views", str(s.num_retrieval_views)]
    return command


def reconstruction_command(s: Lyra2Settings, python: str, video: Path) -> list[str]:
    if not s.chunked_reconstruction:
        return [python, "-m", RECONSTRUCT_MODULE, "--input_video_path", str(video)]
    return [python, "-m", CHUNKED_RECONSTRUCT_MODULE, "--input_video_path", str(video),
            "--num_chunks", str(s.num_chunks), "--chunk_size", str(s.chunk_size),
            "--chunk_overlap", str(s.chunk_overlap)]


def lyra_environment() -> dict[str, str]:
    """Our environment, with Lyra-2 as the only extra import root (its README's `PYTHONPATH=.`)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = "."
    env["PYTHONUNBUFFERED"] = "1"  # line by line, not in 8 KB blocks, so progress is live
    env.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")  # as Lyra's README sets it
    return env


# -- running Lyra ----------------------------------------------------------------------------------------

_PROBE = """
import importlib.util, json, sys
report = {"missing": [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]}
try:
    import torch
except Exception as exc:
    report["torch_error"] = repr(exc)
else:
    report["torch"] = torch.__version__
    report["cuda"] = bool(torch.cuda.is_available())
    if report["cuda"]:
        props = torch.cuda.get_device_properties(0)
        report["gpu"] = {"name": props.name, "memory_bytes": int(props.total_memory)}
print(json.dumps(report))
"""


def probe_python(python: str, root: Path) -> dict[str, Any]:
    """What Lyra's Python offers: torch, CUDA, the first GPU's memory, which of Lyra's packages are missing."""
    try:
        done = subprocess.run([python, "-c", _PROBE, *LYRA_PACKAGES], cwd=root, env=lyra_environment(), check=False,
                              capture_output=True, text=True, timeout=300)
    except FileNotFoundError as exc:
        raise LyraAssetsError(f"lyra2: no Python at {python!r}; set LYRA2_PYTHON to the Python of Lyra's "
                              "environment") from exc
    except subprocess.TimeoutExpired as exc:
        raise LyraAssetsError(f"lyra2: {python} took over 5 minutes to import torch; check its environment") from exc
    lines = done.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError) as exc:
        raise LyraAssetsError(f"lyra2: {python} failed to start (exit status {done.returncode}): "
                              f"{done.stderr.strip()[-500:]}") from exc


def run_streaming(command: list[str], cwd: Path, log: Path, stage: str, progress: Progress) -> None:
    """Run one of Lyra's steps; every output line goes to the log and, as it comes, to progress.

    tqdm redraws its bar with carriage returns; text mode splits on those too, so each redraw is a line and
    its "n/total" drives the stage's progress. Interrupting us stops Lyra too.
    """
    tail: deque[str] = deque(maxlen=25)
    done, total = 0, 1
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"\n$ cd {cwd} && PYTHONPATH=. {' '.join(command)}\n")
        out.flush()
        proc = subprocess.Popen(command, cwd=cwd, env=lyra_environment(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace", bufsize=1)
        try:
            for raw in proc.stdout:
                line = raw.rstrip()
                if not line:
                    continue
                out.write(line + "\n")
                tail.append(line)
                bar = _TQDM.search(line)
                if bar:
                    done, total = int(bar.group(1)), max(1, int(bar.group(2)))
                progress(stage, done, total, line[-120:])
            status = proc.wait()
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    if status != 0:
        raise LyraAssetsError(f"Lyra 2.0 `{stage}` failed (exit status {status}). Last lines:\n"
                              + "\n".join(tail) + f"\nFull log: {log}")
    progress(stage, total, total, "done")


# -- Lyra's outputs --------------------------------------------------------------------------------------


def read_video(path: Path, n_frames: int, keep: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """The frames `keep` of Lyra's video as (len(keep), H, W, 3) uint8, and the video's (width, height)."""
    import imageio_ffmpeg

    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
    except (OSError, RuntimeError, StopIteration) as exc:
        raise LyraAssetsError(f"{path}: cannot read Lyra's video ({exc}); delete it to generate it again") from exc
    width, height = meta["size"]
    wanted = set(keep.tolist())
    frames = np.empty((len(keep), height, width, 3), np.uint8)
    count = 0
    for count, data in enumerate(reader, start=1):
        if count - 1 in wanted:
            frames[np.searchsorted(keep, count - 1)] = np.frombuffer(data, np.uint8).reshape(height, width, 3)
    if count != n_frames:
        raise LyraAssetsError(f"{path}: {count} frames, but Lyra was asked for {n_frames}; the run was cut "
                              f"short: delete {path.parent.parent} to generate it again")
    return frames, (width, height)
