"""Explore further from where you stand: one more segment of camera path, generated with the world so far as
the generator's memory and appended to the walkthrough.

A segment starts at a camera of the walkthrough (`from_frame`, default the last) and follows a preset's motion
expressed relative to that camera, or a Lyra trajectory.npz (relative to its own first camera, or already in
the world's frame: `in_world`, as the Blender add-on exports a camera animated around the level). It keeps
clear of the surfaces the generator knows, like a preset. The world's camera (frame size, field of view),
scene (eye height) and generator stay as recorded: they are the world's, not the segment's.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, generators
from .errors import LyraAssetsError
from .images import ConceptImage
from .job import JobSpec, _digest
from .motions import camera_path, keep_clear
from .progress import Progress, silent
from .provenance import Provenance
from .trajectory import CameraPath
from .walkthrough import Walkthrough

SEGMENT_OPTIONS = ("path",)  # what a segment may set for itself; the rest of its settings are the world's


@dataclass(frozen=True)
class Extension:
    walkthrough: Walkthrough  # the earlier frames followed by the segment's
    kept: int  # frames of the earlier walkthrough, unchanged at its start
    provenance: Provenance  # the world's record with the segment added (its key changes)


def extend_walkthrough(earlier: Walkthrough, source: str, preset: str | None = None,
                       trajectory: str | Path | None = None, from_frame: int | None = None, *,
                       in_world: bool = False, options: dict[str, Any] | None = None,
                       progress: Progress = silent) -> Extension:
    """Generate one more segment of `earlier` (read from `source`) and append it; nothing is written."""
    started = time.perf_counter()
    options = dict(options or {})
    unknown = set(options) - set(SEGMENT_OPTIONS)
    if unknown:
        raise LyraAssetsError(f"an extension keeps the world's {', '.join(sorted(unknown))} settings; a segment "
                              f"sets only its {', '.join(SEGMENT_OPTIONS)}")
    if preset and trajectory:
        raise LyraAssetsError("give a preset or a trajectory for the new segment, not both")
    if "provenance" not in earlier.info:
        raise LyraAssetsError(f"{source}: the walkthrough has no provenance record, so its generator and settings "
                              f"are unknown; only a walkthrough lyra-assets generated can be extended")
    world = Provenance.from_json(earlier.info["provenance"], source)
    first = world.spec()
    if in_world and trajectory is None:
        raise LyraAssetsError("in_world applies to a trajectory file; give one")
    if in_world and from_frame is not None:
        raise LyraAssetsError("a trajectory in the world's frame starts where it starts; leave out --from-frame")
    if from_frame is not None and not -len(earlier) <= from_frame < len(earlier):
        raise LyraAssetsError(f"--from-frame {from_frame}: the walkthrough has frames 0 to {len(earlier) - 1} "
                              f"(negative numbers count from the end)")
    start_frame = None if in_world else (len(earlier) - 1 if from_frame is None else from_frame % len(earlier))
    spec = segment_spec(first, preset, trajectory is not None, options, source)

    generator = generators.create(first.generator, spec.preset, spec.generator_settings,
                                  source=f"the world's recorded settings ({source})")
    if generator.takes_prompt:
        generator.set_text(spec.prompt, first.image_path)
    if generator.notice:
        progress("notice", 1, 1, generator.notice)
    image = ConceptImage(earlier.input_image, first.name, first.image_sha256)  # as the generator saw it first
    progress("survey", 0, 1, f"{first.generator}: reading the scene")
    space = generator.survey(image)
    start = None if start_frame is None else earlier.path.c2w[start_frame]
    if trajectory is None:
        path, notes = camera_path(spec.preset, space, start)
        file = None
    else:
        path, file = _trajectory_path(Path(trajectory), earlier.path, start, spec, options)
        path, notes = keep_clear(path, space, spec.preset.scene.margin_m, {"motion": "from file", **file})
    progress("survey", 1, 1, f"{len(path)} cameras from frame {start_frame}" if start_frame is not None
             else f"{len(path)} cameras")
    segment = generator.generate(image, path, progress, memory=earlier)

    record = {"start": len(earlier), "frames": len(path), "from_frame": start_frame,
              "preset": None if file else spec.preset.name, "trajectory": file, "settings": spec.settings(),
              "camera_path": notes, "generator": segment.info.get("generator"),  # e.g. what it remembered
              "key": _digest([spec.walk_key, file and file["digest"], start_frame, earlier.info.get("job_key")])}
    grown = world.extended(record)
    info = dict(earlier.info)
    timings = dict(info.get("timings_s", {}))
    timings[f"extend_{len(grown.segments)}"] = round(time.perf_counter() - started, 3)
    first_segment = {"start": 0, "frames": record["start"], "from_frame": None, "preset": world.preset,
                     "trajectory": None, "key": first.walk_key}
    info.update({"job_key": grown.job_key, "provenance": grown.to_json(), "timings_s": timings,
                 "tool": {"name": "lyra-assets", "version": __version__},
                 "segments": [*info.get("segments", [first_segment]), record]})
    walkthrough = Walkthrough(
        np.concatenate([earlier.frames, segment.frames]), np.concatenate([earlier.depth, segment.depth]),
        np.concatenate([earlier.observed, segment.observed]),
        CameraPath(np.concatenate([earlier.path.c2w, path.c2w]), np.concatenate([earlier.path.K, path.K]),
                   earlier.path.width, earlier.path.height, earlier.path.fps),
        earlier.input_image, info, segment.splats if segment.splats is not None else earlier.splats,
        earlier.labelled)
    return Extension(walkthrough, len(earlier), grown)


def segment_spec(first: JobSpec, preset: str | None, from_file: bool, options: dict[str, Any],
                 source: str) -> JobSpec:
    """The segment's job: the world's settings with the segment's preset (the world's own by default) and
    path options; its frame count and rate are the world's unless the options say otherwise (a file keeps
    its own count)."""
    settings = first.settings()
    table = {k: v for k, v in settings.items() if k not in ("preset", "path")}
    table["preset"] = preset or first.preset.name
    table["path"] = {"fps": settings["path"]["fps"]} if from_file else \
        {"frames": settings["path"]["frames"], "fps": settings["path"]["fps"]}
    record = {**first.to_record(), "settings": table, "camera_path_file": None}
    return JobSpec.from_record(record, options or None, source=f"the segment's settings for {source}")


def _trajectory_path(file: Path, world: CameraPath, start: np.ndarray | None, spec: JobSpec,
                     options: dict[str, Any]) -> tuple[CameraPath, dict[str, Any]]:
    """The file's cameras at the world's frame size, resampled to the options' frame count if given, placed
    at `start` (None: they are in the world's frame already)."""
    path = CameraPath.from_lyra_npz(file, fps=world.fps, rebase=start is not None)
    poses = len(path)
    frames = options.get("path", {}).get("frames")
    if frames is not None and frames != poses:
        path = path.resampled(frames)
    if (path.width, path.height) != (world.width, world.height):
        path = path.resized(world.width, world.height)
    if start is not None:
        path = CameraPath(start @ path.c2w, path.K, path.width, path.height, path.fps)
    digest = hashlib.sha256(np.ascontiguousarray(path.c2w).tobytes() + np.ascontiguousarray(path.K).tobytes())
    return path, {"file": str(file), "poses_in_file": poses, "frames": len(path), "in_world": start is None,
                  "digest": digest.hexdigest()}
