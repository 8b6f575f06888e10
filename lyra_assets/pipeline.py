"""The pipeline, top to bottom: job -> camera path -> walkthrough -> fused mesh -> LOD chain -> glTF.

The command line, the drop-folder daemon and the Blender add-on all call these functions:
`generate` (the walkthrough alone), `mesh` (the asset stages on a saved walkthrough), `build` (both) and
`extend` (one more segment of a built world, and its asset rebuilt).
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np

from . import __version__, generators, heap
from .assets.collision import spawn_clearance
from .assets.level import make_level_asset
from .errors import LyraAssetsError
from .export.profiles import DEFAULT_PROFILE, profile_file, write_profile
from .export.preview import render_preview
from .export.splats import export_splats
from .extension import extend_walkthrough
from .files import output_folder, write_json_atomically
from .images import load_concept_image
from .job import JobSpec, check_asset_options, resolve_job, safe_name
from .motions import camera_path, keep_clear
from .presets import deep_merge
from .progress import Progress, silent
from .provenance import Provenance
from .settings import TABLES
from .reconstruct.fusion import fuse
from .walkthrough import Walkthrough
from .warmup import compiles_reported, set_up_numba

COMPILE_NOTE = " (once; `lyra-assets warm-up` compiles them all ahead)"
T = TypeVar("T")


MESH_OPTIONS = tuple(TABLES)  # what `mesh` may change of a saved walkthrough's job


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
    usd: Path | None = None  # when the job asked for USD too

    @property
    def outputs(self) -> dict[str, str]:
        usd = {} if self.usd is None else {"usd": str(self.usd)}
        return {"glb": str(self.glb), **usd, "manifest": str(self.manifest_path), "preview": str(self.preview),
                "walkthrough": str(self.walkthrough_dir)}


def _compiles_reported(stages: Callable[..., T]) -> Callable[..., T]:
    """The numba kernels these stages compile show as progress: seconds each, where a bar would seem stuck.
    None do once `lyra-assets warm-up` ran (warmup.py)."""
    parameters = inspect.signature(stages)

    @functools.wraps(stages)
    def run(*args: Any, **kwargs: Any) -> T:
        progress = parameters.bind(*args, **kwargs).arguments.get("progress", silent)
        with compiles_reported(progress, note=COMPILE_NOTE):
            return stages(*args, **kwargs)

    return run


@_compiles_reported
def walk(spec: JobSpec, progress: Progress = silent) -> Walkthrough:
    """Run the job's generator along the preset's (or the given) camera path."""
    heap.tune_for_job()
    threading.Thread(target=set_up_numba, name="numba set-up").start()  # while the picture is read
    started = time.perf_counter()
    image = load_concept_image(spec.image_path)  # checked before any other work: a bad image costs nothing
    if image.sha256 != spec.image_sha256:
        raise LyraAssetsError(f"{spec.image_path}: the image changed since the job was set up (its bytes differ); "
                              f"start the job again")
    generator = generators.create(spec.generator, spec.preset, spec.generator_settings,
                                  source=f"{spec.sidecar or 'settings'}")
    if generator.takes_prompt:  # the job's prompt, or a caption file next to the image
        generator.set_text(spec.prompt, spec.image_path)
    if generator.notice:  # e.g. a model licence the user must know of; the CLI prints it
        progress("notice", 1, 1, generator.notice)
    progress("survey", 0, 1, f"{spec.generator}: reading the scene")
    space = generator.survey(image)
    if spec.path_file is None:
        path, path_notes = camera_path(spec.preset, space)
    elif spec.trajectory is None:
        raise LyraAssetsError(f"{spec.path_file.file}: the job's camera path file is gone; put it back to "
                              f"generate this job again")
    else:
        path, path_notes = keep_clear(spec.trajectory, space, spec.preset.scene.margin_m,
                                      {"motion": "from file", **spec.path_file.to_json()})
    progress("survey", 1, 1, f"{len(path)} cameras")
    walkthrough = generator.generate(image, path, progress)
    walkthrough.info.update({"tool": {"name": "lyra-assets", "version": __version__}, "job_key": spec.key,
                             "provenance": Provenance.of(spec, generator.licence).to_json(),
                             "camera_path": path_notes})
    walkthrough.info.setdefault("timings_s", {})["walk_total"] = round(time.perf_counter() - started, 3)
    return walkthrough


def job_spec(image: str | Path | JobSpec, preset: str | None = None, generator: str | None = None,
             options: dict[str, Any] | None = None, **resolve: Any) -> JobSpec:
    """A spec as it is, or one resolved from an image; `preset` and `generator` are options too."""
    if isinstance(image, JobSpec):
        if preset or generator or options or resolve:
            raise TypeError("give either a JobSpec or an image with its settings, not both")
        return image
    named = {k: v for k, v in (("preset", preset), ("generator", generator)) if v}
    return resolve_job(image, deep_merge(options or {}, named), **resolve)


@heap.gives_memory_back
def generate(image: str | Path | JobSpec, preset: str | None = None, out_dir: str | Path = "out",
             generator: str | None = None, *, options: dict[str, Any] | None = None, force: bool = False,
             progress: Progress = silent, **resolve: Any) -> GenerateResult:
    """Concept image -> out_dir/<name>/walkthrough/ (frames, depth, cameras, previews, manifest).
    `resolve` takes resolve_job's keywords (sidecar, trajectory, preset_dirs, ...)."""
    spec = job_spec(image, preset, generator, options, **resolve)
    target = Path(out_dir) / spec.name / "walkthrough"
    _refuse_existing([target], force)
    walkthrough = walk(spec, progress)
    progress("save", 0, 1, str(target))
    walkthrough.save(target, force=force)
    progress("save", 1, 1, str(target))
    return GenerateResult(target, walkthrough.info)


@heap.gives_memory_back
def build(image: str | Path | JobSpec, preset: str | None = None, out_dir: str | Path = "out",
          generator: str | None = None, *, options: dict[str, Any] | None = None, force: bool = False,
          progress: Progress = silent, **resolve: Any) -> BuildResult:
    """Concept image -> out_dir/<name>/<name>.glb, with manifest.json, preview.png and walkthrough/.

    A walkthrough this same job saved before (a build that failed in the asset stages) is used again."""
    spec = job_spec(image, preset, generator, options, **resolve)
    folder = Path(out_dir) / spec.name
    _refuse_existing(_export_paths(folder, spec.name, spec), force)
    saved = _saved_walk(folder / "walkthrough", spec)
    if saved is None:
        _refuse_existing([folder / "walkthrough"], force)
        walkthrough = walk(spec, progress)
    else:
        progress("survey", 1, 1, "using the walkthrough this job saved before")
        walkthrough = saved
    provenance = Provenance.from_json(walkthrough.info["provenance"], str(folder / "walkthrough"))

    def make_asset() -> BuildResult:
        return _make_asset(walkthrough, folder / "walkthrough", folder, spec.name, provenance.respecified(spec),
                           force, progress)

    if saved is not None:
        return make_asset()
    return _with_walkthrough_saved(walkthrough, folder / "walkthrough", force, progress, make_asset)


@heap.gives_memory_back
def mesh(walkthrough_dir: str | Path, out_dir: str | Path = "out", name: str | None = None, *,
         options: dict[str, Any] | None = None, force: bool = False, progress: Progress = silent) -> BuildResult:
    """A saved walkthrough folder -> out_dir/<name>/<name>.glb (+ manifest.json, preview.png).
    `options` may set [assets], [fusion] and [export]; the walkthrough's own settings stay as recorded."""
    walkthrough_dir = Path(walkthrough_dir)
    check_asset_options(options)  # refused before the walkthrough is read
    walkthrough = Walkthrough.load(walkthrough_dir)
    provenance = _recorded_provenance(walkthrough, walkthrough_dir, options)
    if name is None:
        parent = walkthrough_dir.resolve()
        name = safe_name(parent.parent.name if parent.name == "walkthrough" else parent.name)
    folder = Path(out_dir) / name
    _refuse_existing(_export_paths(folder, name, provenance.spec()), force)
    return _make_asset(walkthrough, walkthrough_dir, folder, name, provenance, force, progress)


@heap.gives_memory_back
def extend(folder: str | Path, preset: str | None = None, trajectory: str | Path | None = None,
           from_frame: int | None = None, *, in_world: bool = False, options: dict[str, Any] | None = None,
           progress: Progress = silent) -> BuildResult:
    """Grow the world built in `folder` (out/<name>/) by one segment of camera path, then rebuild its asset from
    the whole walkthrough (see extension.py for where the segment starts). `options` may set the segment's [path]
    and the asset's [assets], [fusion] and [export] (else as the asset was built).

    Earlier frames stay byte for byte. Nothing under `folder` changes until everything is made, then the new
    walkthrough and asset files are renamed into place: a failed extension leaves the earlier world as it was."""
    folder = Path(folder)
    walk_dir = folder / "walkthrough"
    if not walk_dir.is_dir():
        raise LyraAssetsError(f"{folder}: no walkthrough/ in it; give the folder a build wrote (out/<name>)")
    options = options or {}
    name, asset_settings = _built_asset(folder)
    earlier = Walkthrough.load(walk_dir)
    asset_options = deep_merge(asset_settings, {k: v for k, v in options.items() if k in MESH_OPTIONS})
    if "provenance" in earlier.info:  # an optional exporter that is missing is reported before any work
        _export_paths(folder, name, Provenance.from_json(earlier.info["provenance"], str(walk_dir)).spec(asset_options))
    grown = extend_walkthrough(earlier, str(walk_dir), preset, trajectory, from_frame, in_world=in_world,
                               options={k: v for k, v in options.items() if k not in MESH_OPTIONS},
                               progress=progress)
    provenance = grown.provenance.respecified(grown.provenance.spec(asset_options))
    with output_folder(walk_dir, force=True) as new_walk, \
            tempfile.TemporaryDirectory(prefix=".extending.", dir=folder) as staged:
        progress("save", 0, 1, "walkthrough")
        grown.walkthrough.write_into(new_walk, walk_dir, grown.kept)
        progress("save", 1, 1, "walkthrough")
        built = _make_asset(grown.walkthrough, walk_dir, Path(staged), name, provenance, True, progress)
        if Walkthrough.recorded_key(walk_dir) != earlier.info.get("job_key"):  # extended meanwhile by another run
            raise LyraAssetsError(f"{walk_dir} changed while this extension ran; extend it again from what is there")
        for file in Path(staged).iterdir():
            file.replace(folder / file.name)
    return BuildResult(folder / built.glb.name, folder / built.manifest_path.name, folder / built.preview.name,
                       walk_dir, built.manifest, built.usd and folder / built.usd.name)


def _built_asset(folder: Path) -> tuple[str, dict[str, Any]]:
    """The asset's name and its [assets], [fusion] and [export] settings, as its manifest records them."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        settings = manifest["provenance"]["job"]["settings"]
        return str(manifest["asset"]), {k: settings[k] for k in MESH_OPTIONS if k in settings}
    except (OSError, ValueError, KeyError, TypeError):  # a walkthrough without an asset yet
        return safe_name(folder.resolve().name), {}


def _export_paths(folder: Path, name: str, spec: JobSpec) -> list[Path]:
    """The asset files the job writes: one GLB per engine profile, then the USD package when asked for."""
    glbs = [profile_file(folder, name, profile) for profile in spec.export.profiles]
    if "usd" not in spec.export.formats:
        return glbs
    from .export import usd  # noqa: F401  usd-core is optional: a missing one is reported here, before any work

    return [*glbs, folder / f"{name}.usdz"]


def _recorded_provenance(walkthrough: Walkthrough, folder: Path, options: dict[str, Any] | None) -> Provenance:
    """The walkthrough's record with new asset options; for a walkthrough made by another tool, a record of
    its input image under the built-in settings."""
    if "provenance" in walkthrough.info:
        recorded = Provenance.from_json(walkthrough.info["provenance"], str(folder / "manifest.json"))
        return recorded.respecified(recorded.spec(options))
    image = folder / "input.png"
    record = {"image": str(image), "image_sha256": hashlib.sha256(image.read_bytes()).hexdigest(),
              "name": safe_name(folder.name), "settings": {}}
    spec = JobSpec.from_record(record, options, source=f"{folder} (made by another tool)")
    made_by = walkthrough.info.get("generator") or {}
    return Provenance(spec.key, f"lyra-assets {__version__}", str(made_by.get("name", "unknown")),
                      str(made_by.get("version", "unknown")), str(made_by.get("licence", "unknown")),
                      "unknown", spec.to_record())


def _saved_walk(folder: Path, spec: JobSpec) -> Walkthrough | None:
    """The walkthrough in `folder`, if this same job (same image, walk settings and path) saved it."""
    try:
        info = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        recorded = Provenance.from_json(info["provenance"], str(folder)).spec()
    except (OSError, ValueError, KeyError, LyraAssetsError):
        return None
    if recorded.walk_key != spec.walk_key or info.get("segments"):  # an extended world is more than this job
        return None
    return Walkthrough.load(folder)


@_compiles_reported
def _make_asset(walkthrough: Walkthrough, walkthrough_dir: Path, folder: Path, name: str, provenance: Provenance,
                force: bool, progress: Progress) -> BuildResult:
    heap.tune_for_job()
    spec = provenance.spec()
    timings = dict(walkthrough.info.get("timings_s", {}))

    started = time.perf_counter()
    fused = fuse(walkthrough, spec.fusion.voxel_size_m, progress=progress)
    timings["fuse"] = round(time.perf_counter() - started, 3)

    started = time.perf_counter()
    asset = make_level_asset(name, fused.mesh, walkthrough, spec.assets, progress)
    timings["assets"] = round(time.perf_counter() - started, 3)
    asset.extras = provenance.extras()

    started = time.perf_counter()
    paths = _export_paths(folder, name, spec)
    glbs, usd = paths[:len(spec.export.profiles)], paths[len(spec.export.profiles):]
    steps = len(paths) + 1
    outputs: dict[str, Any] = {}
    preview = folder / "preview.png"
    shown = walkthrough.frames[np.linspace(0, len(walkthrough) - 1, 4).round().astype(int)]
    # Drawn on a thread beside the exporters, whose texture encoding leaves a core free at times (the
    # `with` waits for it however the exports end). The generator's labelling of the concept image (if it
    # made one) shows how it read the picture.
    with ThreadPoolExecutor(1, thread_name_prefix="preview") as drawing:
        drawn = drawing.submit(render_preview, asset, walkthrough.input_image if walkthrough.labelled is None
                               else walkthrough.labelled, list(shown), preview)
        for k, (profile, path) in enumerate(zip(spec.export.profiles, glbs)):  # one file per engine profile
            progress("export", k, steps, f"glTF ({profile})")
            summary = write_profile(asset, profile, path)
            outputs["glb" if profile == DEFAULT_PROFILE else f"glb.{profile}"] = {"file": path.name,
                                                                                "bytes": summary["bytes"]}
        level = summary["level"]  # spawn, bounding sphere, LOD switch distances (glTF frame, metres)
        glb = glbs[0]
        if usd:
            from .export.usd import write_usd  # usd-core is optional: imported only when USD is asked for

            progress("export", len(glbs), steps, "USD")
            summary = write_usd(asset, usd[0])
            outputs["usd"] = {"file": usd[0].name, "bytes": summary["bytes"], "root": summary["root"]}
        if walkthrough.splats is not None:  # next to the GLB, in its frame: Y up, metres
            splats_file = folder / f"{name}.splats.ply"
            export_splats(walkthrough.splats, splats_file)
            outputs["splats"] = {"file": splats_file.name, "bytes": splats_file.stat().st_size,
                                 "gaussians": len(walkthrough.splats)}
        progress("export", steps - 1, steps, "preview")
    drawn.result()
    progress("export", steps, steps, "done")
    timings["export"] = round(time.perf_counter() - started, 3)

    manifest = {
        "tool": {"name": "lyra-assets", "version": __version__},
        "asset": name,
        "job_key": provenance.job_key,
        "provenance": provenance.to_json(),
        "generator": walkthrough.info.get("generator"),
        "camera_path": walkthrough.info.get("camera_path"),
        "fusion": {"voxel_size_m": fused.voxel_size, "triangles": int(len(fused.mesh.faces)),
                   "notes": fused.notes},
        "lods": [{"node": f"{name}_LOD{i}", "triangles": int(len(lod.faces)), "vertices": int(len(lod.vertices)),
                  "texture_size": int(lod.albedo.shape[0]), "screen_coverage": lod.screen_coverage,
                  "geometric_error_m": lod.geometric_error} for i, lod in enumerate(asset.lods)],
        "collider": {"mesh": f"{name}_collider", "triangles": int(len(asset.collider.faces)), **asset.collider.notes},
        # The spawn in the glTF frame; for robots, a ray down from it to the collider's floor, and up to its ceiling.
        "spawn": {**level["spawn"], "camera": 0, **spawn_clearance(asset.collider)},
        "bounding_sphere": level["bounding_sphere"],
        "lod_switch": level["lod_switch"],
        "timings_s": timings,
        "outputs": {**outputs, "preview": {"file": preview.name, "bytes": preview.stat().st_size},
                    "walkthrough": {"folder": str(walkthrough_dir)}},
    }
    manifest_path = folder / "manifest.json"
    write_json_atomically(manifest_path, manifest)
    return BuildResult(glb, manifest_path, preview, walkthrough_dir, manifest, usd[0] if usd else None)


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
