"""The `lyra-assets` command line: a thin layer over pipeline.py.

Progress goes to stderr as rich progress bars, or with --json-progress to stdout as one JSON object per
line ({"event": "progress", "stage", "done", "total", "message"}), ending with {"event": "done", ...} or
{"event": "error", "message"}. Project errors print without a traceback and exit with status 2.
"""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import click

from . import __version__
from .errors import LyraAssetsError
from .presets import available_presets, load_preset

EXIT_BAD_INPUT = 2


class JsonLines:
    """Progress as JSON lines on stdout, for machines (the daemon, the Blender add-on)."""

    def __call__(self, stage: str, done: int, total: int, message: str = "") -> None:
        self.emit({"event": "progress", "stage": stage, "done": done, "total": total, "message": message})

    @staticmethod
    def emit(event: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
        sys.stdout.flush()


class ProgressBars:
    """One rich progress bar per stage, on stderr."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bars = Progress(TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), TextColumn("{task.fields[message]}"),
                             console=Console(stderr=True), transient=False)
        self.tasks: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int, message: str = "") -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.bars.add_task(stage, total=total, message=message)
        self.bars.update(self.tasks[stage], completed=done, total=total, message=message)


@contextmanager
def reporting(ctx: click.Context) -> Iterator[Any]:
    """The progress callback for this run; turns project errors into a message and exit status 2."""
    json_mode = ctx.find_root().params["json_progress"]
    progress = JsonLines() if json_mode else ProgressBars()
    try:
        if json_mode:
            yield progress
        else:
            with progress.bars:
                yield progress
    except LyraAssetsError as exc:
        if json_mode:
            JsonLines.emit({"event": "error", "message": str(exc)})
        click.echo(f"error: {exc}", err=True)
        ctx.exit(EXIT_BAD_INPUT)


def finish(ctx: click.Context, summary: str, outputs: dict[str, Any]) -> None:
    if ctx.find_root().params["json_progress"]:
        JsonLines.emit({"event": "done", "outputs": outputs})
    else:
        click.echo(summary, err=True)


preset_dir_option = click.option("--preset-dir", "preset_dirs", multiple=True, type=click.Path(path_type=Path),
                                  help="Extra folder of preset TOML files (searched before the built-in ones).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lyra-assets")
@click.option("--json-progress", is_flag=True, help="Print progress as JSON lines on stdout (for machines).")
def main(json_progress: bool) -> None:
    """Turn one concept image into a game-ready glTF level asset."""


@main.command()
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--preset", "-p", help="Walkthrough preset (see `lyra-assets presets list`). [walk_forward]")
@click.option("--generator", "-g", help="Image-to-world generator. [layout]")
@click.option("--sidecar", type=click.Path(path_type=Path), help="Settings file (default: IMAGE's .toml/.json).")
@click.option("--trajectory", type=click.Path(path_type=Path),
              help="Camera path as a Lyra 2.0 trajectory.npz, instead of the preset's motion.")
@click.option("--frames", type=int, help="Number of frames (overrides the preset).")
@click.option("--lyra-frames", is_flag=True, help="Round the frame count to Lyra 2.0's 1 + 80k.")
@click.option("--fov", type=float, help="Horizontal field of view of the concept image, degrees.")
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), default=Path("out"), show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@preset_dir_option
@click.pass_context
def generate(ctx: click.Context, image: Path, preset: str | None, generator: str | None, sidecar: Path | None,
             trajectory: Path | None, frames: int | None, lyra_frames: bool, fov: float | None, out_dir: Path,
             force: bool, preset_dirs: tuple[Path, ...]) -> None:
    """Walk a camera through IMAGE: writes OUT/<name>/walkthrough/."""
    from .pipeline import generate as run_generate

    with reporting(ctx) as progress:
        result = run_generate(image, preset, out_dir, generator, sidecar, trajectory, list(preset_dirs),
                              _overrides(frames, lyra_frames, fov), force, progress)
        finish(ctx, f"walkthrough: {result.walkthrough_dir}", {"walkthrough": str(result.walkthrough_dir)})


def _overrides(frames: int | None, lyra_frames: bool, fov: float | None) -> dict[str, Any]:
    path: dict[str, Any] = {}
    if frames is not None:
        path["frames"] = frames
    if lyra_frames:
        path["lyra_frame_count"] = True
    overrides: dict[str, Any] = {"path": path} if path else {}
    if fov is not None:
        overrides["camera"] = {"hfov_deg": fov}
    return overrides


@main.group()
def presets() -> None:
    """List and show walkthrough presets."""


@presets.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@preset_dir_option
@click.pass_context
def presets_list(ctx: click.Context, as_json: bool, preset_dirs: tuple[Path, ...]) -> None:
    """The presets and what each does."""
    with reporting(ctx):
        found = available_presets(list(preset_dirs))
        rows = [(name, load_preset(name, list(preset_dirs)), file) for name, file in sorted(found.items())]
        if as_json:
            click.echo(json.dumps([{"name": n, "description": p.description, "motion": p.path.motion,
                                    "frames": p.path.frames, "file": str(f)} for n, p, f in rows], indent=2))
        else:
            width = max(len(n) for n, _, _ in rows)
            for name, preset, _ in rows:
                click.echo(f"{name:<{width}}  {preset.description}")


@presets.command("show")
@click.argument("name")
@preset_dir_option
@click.pass_context
def presets_show(ctx: click.Context, name: str, preset_dirs: tuple[Path, ...]) -> None:
    """A preset resolved in full (its parents merged in), then its file."""
    with reporting(ctx):
        preset = load_preset(name, list(preset_dirs))
        file = available_presets(list(preset_dirs))[name]
        click.echo(f"# resolved\n{json.dumps(preset.model_dump(), indent=2)}\n\n# {file}\n{file.read_text()}")
