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
        if stage == "notice":  # a line to read, not a bar
            self.bars.console.print(f"note: {message}", highlight=False, soft_wrap=True)
            return
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


def job_options(command):
    """The options that say what to generate: shared by `generate` and `build`."""
    options = [
        click.argument("image", type=click.Path(path_type=Path)),
        click.option("--preset", "-p", help="Walkthrough preset (see `lyra-assets presets list`). [walk_forward]"),
        click.option("--generator", "-g", help="Image-to-world generator. [layout]"),
        click.option("--sidecar", type=click.Path(path_type=Path),
                     help="Settings file (default: IMAGE's .toml/.json)."),
        click.option("--trajectory", type=click.Path(path_type=Path),
                     help="Camera path as a Lyra 2.0 trajectory.npz, instead of the preset's motion."),
        click.option("--frames", type=int, help="Number of frames (overrides the preset)."),
        click.option("--lyra-frames", is_flag=True, help="Round the frame count to Lyra 2.0's 1 + 80k."),
        click.option("--fov", type=float, help="Horizontal field of view of the concept image, degrees."),
        click.option("--depth-model", type=click.Path(path_type=Path),
                     help="-g depth: the depth model, an .onnx file or a Marigold folder ([depth] model)."),
        preset_dir_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command


def output_options(command):
    command = click.option("--force", is_flag=True, help="Replace existing outputs.")(command)
    return click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), default=Path("out"),
                        show_default=True, help="Output folder; results go to OUT/<name>/.")(command)


def asset_options(command):
    """The options of the asset stages: shared by `build` and `mesh`."""
    options = [
        click.option("--voxel-size", type=click.FloatRange(min=0, min_open=True),
                     help="Fusion voxel size in metres. [from the scene's extent]"),
        click.option("--lod0-triangles", type=int, help="Triangle budget of LOD0. [150000]"),
        click.option("--texture-size", type=int, help="Texture size of LOD0 in texels. [2048]"),
        click.option("--lods", type=click.IntRange(2, 8), help="Levels of detail, LOD0 included. [4]"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _asset_settings(lod0_triangles: int | None, texture_size: int | None, lods: int | None):
    from .assets.level import AssetSettings

    given = {"lod0_triangles": lod0_triangles, "texture_size": texture_size,
             # each further level keeps a quarter of the triangles, close to the default 25 %, 6 %, 1.5 %
             "lod_ratios": None if lods is None else tuple(0.25**k for k in range(1, lods))}
    return AssetSettings(**{k: v for k, v in given.items() if v is not None})


@main.command()
@job_options
@output_options
@click.pass_context
def generate(ctx: click.Context, image: Path, preset: str | None, generator: str | None, sidecar: Path | None,
             trajectory: Path | None, frames: int | None, lyra_frames: bool, fov: float | None,
             depth_model: Path | None, preset_dirs: tuple[Path, ...], out_dir: Path, force: bool) -> None:
    """Walk a camera through IMAGE: writes OUT/<name>/walkthrough/."""
    from .pipeline import generate as run_generate

    with reporting(ctx) as progress:
        result = run_generate(image, preset, out_dir, _generator(generator, depth_model), sidecar, trajectory, list(preset_dirs),
                              _overrides(frames, lyra_frames, fov, depth_model), force, progress)
        finish(ctx, f"walkthrough: {result.walkthrough_dir}", {"walkthrough": str(result.walkthrough_dir)})


@main.command()
@job_options
@output_options
@asset_options
@click.pass_context
def build(ctx: click.Context, image: Path, preset: str | None, generator: str | None, sidecar: Path | None,
          trajectory: Path | None, frames: int | None, lyra_frames: bool, fov: float | None,
          depth_model: Path | None, preset_dirs: tuple[Path, ...], out_dir: Path, force: bool,
          voxel_size: float | None,
          lod0_triangles: int | None, texture_size: int | None, lods: int | None) -> None:
    """IMAGE to a game-ready glTF: writes OUT/<name>/<name>.glb, manifest.json, preview.png, walkthrough/."""
    from .pipeline import build as run_build

    with reporting(ctx) as progress:
        result = run_build(image, preset, out_dir, _generator(generator, depth_model), sidecar, trajectory, list(preset_dirs),
                           _overrides(frames, lyra_frames, fov, depth_model), _asset_settings(lod0_triangles, texture_size, lods),
                           voxel_size, force, progress)
        finish(ctx, f"asset: {result.glb}", result.outputs)


@main.command()
@click.argument("walkthrough", type=click.Path(path_type=Path))
@output_options
@asset_options
@click.option("--name", help="Asset name. [the walkthrough's parent folder]")
@click.pass_context
def mesh(ctx: click.Context, walkthrough: Path, out_dir: Path, force: bool, voxel_size: float | None,
         lod0_triangles: int | None, texture_size: int | None, lods: int | None, name: str | None) -> None:
    """The asset stages alone, on a saved WALKTHROUGH folder: writes OUT/<name>/<name>.glb."""
    from .pipeline import mesh as run_mesh

    with reporting(ctx) as progress:
        result = run_mesh(walkthrough, out_dir, name, _asset_settings(lod0_triangles, texture_size, lods), voxel_size,
                          force, progress)
        finish(ctx, f"asset: {result.glb}", result.outputs)


def _generator(generator: str | None, depth_model: Path | None) -> str | None:
    """--depth-model means -g depth; with another generator it would be silently unused, so it is an error."""
    if depth_model is None:
        return generator
    if generator not in (None, "depth"):
        raise LyraAssetsError(f"--depth-model is for -g depth, not -g {generator}")
    return "depth"


def _overrides(frames: int | None, lyra_frames: bool, fov: float | None,
               depth_model: Path | None = None) -> dict[str, Any]:
    path: dict[str, Any] = {}
    if frames is not None:
        path["frames"] = frames
    if lyra_frames:
        path["lyra_frame_count"] = True
    overrides: dict[str, Any] = {"path": path} if path else {}
    if fov is not None:
        overrides["camera"] = {"hfov_deg": fov}
    if depth_model is not None:
        overrides["depth"] = {"model": str(depth_model)}
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


from .daemon.commands import status, watch  # noqa: E402  the drop-folder daemon

main.add_command(watch)
main.add_command(status)
