"""The pipeline, top to bottom: job -> camera path -> walkthrough -> fused mesh -> LOD chain -> glTF.

The command line, the drop-folder daemon and the Blender add-on all call these functions:
`generate` (the walkthrough alone), `mesh` (the asset stages on a saved walkthrough) and `build` (both).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import __version__, generators
from .assets.level import AssetSettings, make_level_asset
from .errors import LyraAssetsError
from .export.gltf import write_glb
from .export.preview import render_preview
from .files import write_json_atomically
from .job import Job, load_job, safe_name
from .motions import camera_path, keep_clear
from .progress import Progress, silent
from .reconstruct.fusion import fuse
from .splats import export_splats
from .walkthrough import Walkthrough


@dataclass(frozen=True)
class GenerateResult:
    walkthrough_dir: Path
    manifest: dict[str, Any]


@dataclass(frozen=True)
class BuildResult:
    glb: Path
    manifest_path: Path
    preview: Path
    walkthrough_dir: Path
    manifest: dict[str, Any]

    @property
    def outputs(self) -> dict[str, str]:
        return {"glb": str(self.glb), "manifest": str(self.manifest_path), "preview": str(self.preview),
                "walkthrough": str(self.walkthrough_dir)}


def walk(job: Job, progress: Progress = silent) -> Walkthrough:
    """Run the job's generator along the preset's (or the given) camera path."""
    started = time.perf_counter()
    generator = generators.create(job.generator, job.preset, job.generator_settings,
                                  source=f"{job.sidecar or 'settings'}")
    if hasattr(generator, "set_text"):  # generators that take text: the job's prompt, or a caption file
        generator.set_text(job.prompt, job.image_path)
    if getattr(generator, "notice", None):  # e.g. a model licence the user must know of; the CLI prints it
        progress("notice", 1, 1, generator.notice)
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
    _refuse_existing([target], force)
    walkthrough = walk(job, progress)
    progress("save", 0, 1, str(target))
    walkthrough.save(target, force=force)
    progress("save", 1, 1, str(target))
    return GenerateResult(target, walkthrough.info)


def build(image: str | Path, preset: str | None = None, out_dir: str | Path = "out",
          generator: str | None = None, sidecar: str | Path | None = None,
          trajectory: str | Path | None = None, preset_dirs: list[Path] | None = None,
          overrides: dict[str, Any] | None = None, asset_settings: AssetSettings | None = None,
          voxel_size: float | None = None, force: bool = False, progress: Progress = silent) -> BuildResult:
    """Concept image -> out_dir/<name>/<name>.glb, with manifest.json, preview.png and walkthrough/."""
    job = load_job(image, preset, generator, sidecar, trajectory, preset_dirs, overrides)
    folder = Path(out_dir) / job.name
    _refuse_existing([folder / "walkthrough", folder / f"{job.name}.glb"], force)
    walkthrough = walk(job, progress)
    return _with_walkthrough_saved(walkthrough, folder / "walkthrough", force, progress, lambda: _make_asset(
        walkthrough, folder / "walkthrough", folder, job.name, asset_settings, voxel_size, force, progress))


def mesh(walkthrough_dir: str | Path, out_dir: str | Path = "out", name: str | None = None,
         asset_settings: AssetSettings | None = None, voxel_size: float | None = None, force: bool = False,
         progress: Progress = silent) -> BuildResult:
    """A saved walkthrough folder -> out_dir/<name>/<name>.glb (+ manifest.json, preview.png)."""
    walkthrough_dir = Path(walkthrough_dir)
    walkthrough = Walkthrough.load(walkthrough_dir)
    if name is None:
        parent = walkthrough_dir.resolve()
        name = safe_name(parent.parent.name if parent.name == "walkthrough" else parent.name)
    folder = Path(out_dir) / name
    _refuse_existing([folder / f"{name}.glb"], force)
    return _make_asset(walkthrough, walkthrough_dir, folder, name, asset_settings, voxel_size, force, progress)


def _make_asset(walkthrough: Walkthrough, walkthrough_dir: Path, folder: Path, name: str,
                settings: AssetSettings | None, voxel_size: float | None, force: bool,
                progress: Progress) -> BuildResult:
    settings = settings or AssetSettings()
    timings = dict(walkthrough.info.get("timings_s", {}))

    started = time.perf_counter()
    fused = fuse(walkthrough, voxel_size, progress=progress)
    timings["fuse"] = round(time.perf_counter() - started, 3)

    started = time.perf_counter()
    asset = make_level_asset(name, fused.mesh, walkthrough, settings, progress)
    timings["assets"] = round(time.perf_counter() - started, 3)
    generator = walkthrough.info.get("generator", {})
    settings_used = walkthrough.info.get("settings", {})
    asset.extras = {
        "generator": generator.get("name"), "generator_version": generator.get("version"),
        "model_licence": generator.get("licence"),
        "preset": settings_used.get("preset", {}).get("name"), "job_key": walkthrough.info.get("job_key"),
        "tool": f"lyra-assets {__version__}",
    }

    started = time.perf_counter()
    progress("export", 0, 2, "glTF")
    glb = folder / f"{name}.glb"
    summary = write_glb(asset, glb)
    outputs = {"glb": {"file": glb.name, "bytes": summary["bytes"]}}
    if walkthrough.splats is not None:  # next to the GLB, in its frame: Y up, metres
        splats_file = folder / f"{name}.splats.ply"
        export_splats(walkthrough.splats, splats_file)
        outputs["splats"] = {"file": splats_file.name, "bytes": splats_file.stat().st_size,
                             "gaussians": len(walkthrough.splats)}
    progress("export", 1, 2, "preview")
    preview = folder / "preview.png"
    shown = walkthrough.frames[np.linspace(0, len(walkthrough) - 1, 4).round().astype(int)]
    render_preview(asset, walkthrough.input_image, list(shown), preview)
    progress("export", 2, 2, "done")
    timings["export"] = round(time.perf_counter() - started, 3)

    manifest = {
        "tool": {"name": "lyra-assets", "version": __version__},
        "asset": name,
        "job_key": walkthrough.info.get("job_key"),
        "generator": generator,
        "inputs": walkthrough.info.get("inputs"),
        "settings": {**settings_used, "voxel_size_m": fused.voxel_size, "assets": asdict(settings)},
        "camera_path": walkthrough.info.get("camera_path"),
        "fusion": {"voxel_size_m": fused.voxel_size, "triangles": int(len(fused.mesh.faces)),
                   "notes": fused.notes},
        "lods": [{"node": f"{name}_LOD{i}", "triangles": int(len(lod.faces)), "vertices": int(len(lod.vertices)),
                  "texture_size": int(lod.albedo.shape[0]), "screen_coverage": lod.screen_coverage,
                  "geometric_error_m": lod.geometric_error} for i, lod in enumerate(asset.lods)],
        "collider": {"node": f"{name}_collider", "triangles": int(len(asset.collider.faces))},
        "timings_s": timings,
        "outputs": {**outputs, "preview": {"file": preview.name, "bytes": preview.stat().st_size},
                    "walkthrough": {"folder": str(walkthrough_dir)}},
    }
    manifest_path = folder / "manifest.json"
    write_json_atomically(manifest_path, manifest)
    return BuildResult(glb, manifest_path, preview, walkthrough_dir, manifest)


def _with_walkthrough_saved(walkthrough: Walkthrough, target: Path, force: bool, progress: Progress,
                            make: Callable[[], BuildResult]) -> BuildResult:
    """Save the walkthrough in the background while `make` runs the later stages; wait for both. An error
    in either is raised (the stages' first: the walkthrough is still kept for a retry)."""
    progress("save", 0, 1, "walkthrough, in the background")
    saving = walkthrough.save_in_background(target, force=force)
    try:
        result = make()
    except BaseException:
        saving.exception()  # wait, so no half-written folder is left while the error propagates
        raise
    try:
        saving.result()
    except OSError as exc:
        raise LyraAssetsError(f"{target}: could not write the walkthrough ({exc}); check the disk's free "
                              "space and permissions, then run `lyra-assets build` again") from exc
    progress("save", 1, 1, "walkthrough")
    return result


def _refuse_existing(paths: list[Path], force: bool) -> None:
    """Checked before any work starts, so a refusal costs nothing."""
    for path in paths:
        if path.exists() and not force:
            raise LyraAssetsError(f"{path} already exists; pass --force to replace it, or choose another -o folder.")
