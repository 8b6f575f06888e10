"""The `lyra-assets` command line as the add-on sees it: the arguments it builds and the lines it reads back.

Plain Python without bpy, so tests run it outside Blender. The protocol (see the CLI's --json-progress):
one JSON object per stdout line, {"event": "progress", "stage", "done", "total", "message"} while working,
then {"event": "done", "outputs": {"glb", "manifest", "preview", "walkthrough"}} or
{"event": "error", "message"} (exit status 2; the message is also on stderr as "error: ...").
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

# The order `build` runs its stages in. A stage missing here (from a newer pipeline) leaves the overall bar
# where the last known stage put it, so the bar never jumps backwards.
STAGES = ("survey", "generate", "save", "fuse", "lod", "uv", "bake", "export")

# How the add-on starts the pipeline: the console script, or any Python that has the package installed.
EXECUTABLE = "EXECUTABLE"
PYTHON = "PYTHON"


@dataclass(frozen=True)
class ProgressEvent:
    stage: str
    done: int
    total: int
    message: str = ""


@dataclass(frozen=True)
class DoneEvent:
    outputs: dict[str, str]


@dataclass(frozen=True)
class ErrorEvent:
    message: str


Event = ProgressEvent | DoneEvent | ErrorEvent


def parse_line(line: str) -> Event | None:
    """One stdout line as an event; None for anything else.

    Libraries the pipeline uses may print their own lines to stdout, and a newer pipeline may add events,
    so a line that is not one of the three events above is skipped rather than treated as a failure.
    """
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    kind = data.get("event")
    if kind == "progress":
        stage, done, total = data.get("stage"), data.get("done"), data.get("total")
        message = data.get("message", "")
        if isinstance(stage, str) and _is_int(done) and _is_int(total) and isinstance(message, str):
            return ProgressEvent(stage, done, total, message)
    elif kind == "done":
        outputs = data.get("outputs")
        if isinstance(outputs, dict):  # paths are strings; an output a build did not make may be null
            return DoneEvent({key: value for key, value in outputs.items() if isinstance(value, str)})
    elif kind == "error":
        message = data.get("message")
        if isinstance(message, str):
            return ErrorEvent(message)
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class JobProgress:
    """What the panel and the status bar show: the current stage and the fraction of the whole job done."""

    def __init__(self) -> None:
        self.stage = ""
        self.done = 0
        self.total = 0
        self.message = ""
        self.fraction = 0.0

    def update(self, event: ProgressEvent) -> None:
        self.stage, self.done, self.total, self.message = event.stage, event.done, event.total, event.message
        if event.stage in STAGES:
            within = min(max(event.done / event.total, 0.0), 1.0) if event.total > 0 else 0.0
            # Equal shares per stage: the stages' real durations depend on the generator and the sizes.
            self.fraction = max(self.fraction, (STAGES.index(event.stage) + within) / len(STAGES))

    @property
    def text(self) -> str:
        if not self.stage:
            return "starting"
        count = f" {self.done}/{self.total}" if self.total > 0 else ""
        return f"{self.stage}{count}" + (f": {self.message}" if self.message else "")


def pipeline_command(how: str, path: str) -> list[str]:
    """The command that starts the pipeline: the `lyra-assets` executable, or `PYTHON -m lyra_assets`."""
    path = os.path.expanduser(path.strip())
    if not path:
        raise ValueError("set the lyra-assets executable or a Python with lyra-assets installed "
                         "in the add-on's preferences")
    if how == EXECUTABLE:
        return [path]
    if how == PYTHON:
        return [path, "-m", "lyra_assets"]
    raise ValueError(f"unknown way to run the pipeline: {how!r}")


@dataclass(frozen=True)
class BuildRequest:
    """One `build` job. Empty strings and zeros leave the choice to the sidecar, the preset or the pipeline."""

    image: str
    out_dir: str
    preset: str = ""
    generator: str = ""
    trajectory: str = ""  # a Lyra-layout trajectory.npz that replaces the preset's motion
    frames: int = 0
    lods: int = 0  # levels of detail, LOD0 included
    lod0_triangles: int = 0
    texture_size: int = 0
    force: bool = False  # replace outputs left by an earlier build of the same image


def build_command(base: list[str], request: BuildRequest) -> list[str]:
    """The full command line of a `build` that reports progress as JSON lines."""
    argv = [*base, "--json-progress", "build", request.image, "-o", request.out_dir]
    for option, value in (("--preset", request.preset), ("--generator", request.generator),
                          ("--trajectory", request.trajectory)):
        if value:
            argv += [option, value]
    for option, number in (("--frames", request.frames), ("--lods", request.lods),
                           ("--lod0-triangles", request.lod0_triangles), ("--texture-size", request.texture_size)):
        if number > 0:
            argv += [option, str(number)]
    if request.force:
        argv.append("--force")
    return argv


def presets_command(base: list[str]) -> list[str]:
    return [*base, "presets", "list", "--json"]


def generators_command(base: list[str]) -> list[str]:
    return [*base, "generators", "list", "--json"]


@dataclass(frozen=True)
class GeneratorInfo:
    name: str
    summary: str
    needs_gpu: bool


def parse_generators(text: str) -> list[GeneratorInfo]:
    """The output of `lyra-assets generators list --json`: a JSON list of {name, summary, needs_gpu, ...}."""
    try:
        return [GeneratorInfo(str(row["name"]), str(row.get("summary", "")), bool(row.get("needs_gpu", False)))
                for row in json.loads(text)]
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"`generators list --json` printed something that is not a list of generators ({exc})") \
            from exc


@dataclass(frozen=True)
class PresetInfo:
    name: str
    description: str
    motion: str
    frames: int


def parse_presets(text: str) -> list[PresetInfo]:
    """The output of `lyra-assets presets list --json`: a JSON list of {name, description, motion, frames}."""
    try:
        rows = json.loads(text)
        return [PresetInfo(str(row["name"]), str(row.get("description", "")), str(row.get("motion", "")),
                           int(row.get("frames", 0))) for row in rows]
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"`presets list --json` printed something that is not a list of presets ({exc})") from exc
