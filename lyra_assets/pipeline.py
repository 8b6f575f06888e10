"""The pipeline, top to bottom: job -> camera path -> walkthrough (-> mesh -> LOD chain -> glTF).

The command line, the drop-folder daemon and the Blender add-on all call these functions.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__, generators
from .errors import LyraAssetsError
from .job import Job, load_job
from .motions import camera_path, keep_clear
from .progress import Progress, silent
from .walkthrough import Walkthrough


@dataclass(frozen=True)
class GenerateResult:
    walkthrough_dir: Path
    manifest: dict[str, Any]


def walk(job: Job, progress: Progress = silent) -> Walkthrough:
    """Run the job's generator along the preset's (or the given) camera path."""
    started = time.perf_counter()
    generator = generators.create(job.generator, job.preset, job.generator_settings,
                                  source=f"{job.sidecar or 'settings'}")
    progress("survey", 0, 1, f"{job.generator}: reading the scene")
    space = generator.survey(job.image)
    if job.trajectory is None:
        path, path_notes = camera_path(job.preset, space)
    else:
        path, path_notes = keep_clear(job.trajectory, space, job.preset.scene.margin_m, {"motion": "from file"})
    progress("survey", 1, 1, f"{len(path)} cameras")
    walkthrough = generator.generate(job.image, path, progress)
    walkthrough.info.update({
        "tool": {"name": "lyra-assets", "version": __version__},
        "job_key": job.key,
        "inputs": {"image": str(job.image_path), "image_sha256": job.image.sha256,
                   "sidecar": None if job.sidecar is None else str(job.sidecar)},
        "settings": job.settings,
        "camera_path": path_notes,
    })
    walkthrough.info.setdefault("timings_s", {})["walk_total"] = round(time.perf_counter() - started, 3)
    return walkthrough


def generate(image: str | Path, preset: str | None = None, out_dir: str | Path = "out",
             generator: str | None = None, sidecar: str | Path | None = None,
             trajectory: str | Path | None = None, preset_dirs: list[Path] | None = None,
             overrides: dict[str, Any] | None = None, force: bool = False,
             progress: Progress = silent) -> GenerateResult:
    """Concept image -> out_dir/<name>/walkthrough/ (frames, depth, cameras, previews, manifest)."""
    job = load_job(image, preset, generator, sidecar, trajectory, preset_dirs, overrides)
    target = Path(out_dir) / job.name / "walkthrough"
    if target.exists() and not force:  # refuse before the work, not after it
        raise LyraAssetsError(f"{target} already exists; pass --force to replace it, or choose another -o folder.")
    walkthrough = walk(job, progress)
    progress("save", 0, 1, str(target))
    walkthrough.save(target, force=force)
    progress("save", 1, 1, str(target))
    return GenerateResult(target, walkthrough.info)
