"""The `lyra-assets` command line: a thin layer over pipeline.py.

Progress goes to stderr as rich progress bars, or with --json-progress to stdout as one JSON object per
line ({"event": "progress", "stage", "done", "total", "message"}), ending with {"event": "done", ...} or
{"event": "error", "message"}. Project errors print without a traceback and exit with status 2.
"""
from __future__ import annotations

import json
import signal
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
    # Ctrl-C, or the add-on's Cancel, stops a run with its cleanup (no half-written temporaries), even when
    # the parent process (a test runner, a host application) started us with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)


def job_options(command):
    """The options that say what to generate: shared by `generate` and `build`."""
    options = [
        click.option("--preset", "-p", help="Walkthrough preset (see `lyra-assets presets list`). [walk_forward]"),
        click.option("--generator", "-g", help="Image-to-world generator (see `lyra-assets generators list`). "
                                               "[layout]"),
        click.option("--prompt", help="Text for generators that take one (e.g. lyra2)."),
        click.option("--sidecar", type=click.Path(path_type=Path),
                     help="Settings file (default: IMAGE's .toml/.json)."),
        click.option("--trajectory", type=click.Path(path_type=Path),
                     help="Camera path as a Lyra 2.0 trajectory.npz, instead of the preset's motion "
                          "(resampled to --frames if given)."),
        click.option("--frames", type=int, help="Number of frames (overrides the preset)."),
        click.option("--lyra-frames", is_flag=True, help="Round the frame count to Lyra 2.0's 1 + 80k."),
        click.option("--fov", type=float, help="Horizontal field of view of the concept image, degrees."),
        click.option("--depth-model", type=click.Path(),
                     help="The depth model of -g depth (implied): an .onnx file or a Marigold folder."),
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
        click.option("--voxel-size", type=float, help="Fusion voxel size in metres. [from the scene's extent]"),
        click.option("--lod0-triangles", type=int, help="Triangle budget of LOD0. [150000]"),
        click.option("--texture-size", type=int, help="Texture size of LOD0 in texels, a power of two. [2048]"),
        click.option("--lods", type=int, help="Levels of detail, LOD0 included, 2 to 8. [4]"),
        click.option("--profile", "profiles", multiple=True, metavar="NAME",
                     help="Engine profile: gltf, unity, unreal, godot or web; one file each, repeatable. [gltf]"),
        click.option("--format", "formats", multiple=True, type=click.Choice(["glb", "usd"]),
                     help="Also write this format (repeatable): usd = <name>.usdz with physics. [glb]"),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def settings_from_options(given: dict[str, Any]) -> dict[str, Any]:
    """The command line's options as a layer of settings, in the sidecar's shape (job.py validates it)."""
    where = {"preset": (), "generator": (), "prompt": (), "frames": ("path",), "lyra_frames": ("path",),
             "fov": ("camera",), "voxel_size": ("fusion",), "lod0_triangles": ("assets",),
             "texture_size": ("assets",), "lods": ("assets",), "formats": ("export",), "profiles": ("export",),
             "depth_model": ("depth",)}
    names = {"lyra_frames": "lyra_frame_count", "fov": "hfov_deg", "voxel_size": "voxel_size_m",
             "depth_model": "model"}
    table: dict[str, Any] = {}
    for option, value in given.items():
        if value is None or value is False or value == () or option not in where:
            continue
        section = table
        for key in where[option]:
            section = section.setdefault(key, {})
        section[names.get(option, option)] = value
    # --depth-model means -g depth; with another generator it would go unused
    if "depth" in table and table.setdefault("generator", "depth") != "depth":
        raise LyraAssetsError(f"--depth-model is for -g depth, not -g {table['generator']}")
    return table


@main.command()
@click.argument("image", type=click.Path(path_type=Path))
@job_options
@output_options
@click.pass_context
def generate(ctx: click.Context, image: Path, sidecar: Path | None, trajectory: Path | None,
             preset_dirs: tuple[Path, ...], out_dir: Path, force: bool, **options: Any) -> None:
    """Walk a camera through IMAGE: writes OUT/<name>/walkthrough/."""
    with reporting(ctx) as progress:
        from .job import resolve_job

        spec = resolve_job(image, settings_from_options(options), sidecar=sidecar, trajectory=trajectory,
                           preset_dirs=list(preset_dirs))
        from .pipeline import generate as run_generate

        result = run_generate(spec, out_dir=out_dir, force=force, progress=progress)
        finish(ctx, f"walkthrough: {result.walkthrough_dir}", {"walkthrough": str(result.walkthrough_dir)})


@main.command()
@click.argument("image", type=click.Path(path_type=Path), required=False)
@job_options
@output_options
@asset_options
@click.option("--from-manifest", type=click.Path(path_type=Path),
              help="Build again what a manifest.json records (same image, settings and key).")
@click.pass_context
def build(ctx: click.Context, image: Path | None, sidecar: Path | None, trajectory: Path | None,
          preset_dirs: tuple[Path, ...], out_dir: Path, force: bool, from_manifest: Path | None,
          **options: Any) -> None:
    """IMAGE to a game-ready glTF: writes OUT/<name>/<name>.glb, manifest.json, preview.png, walkthrough/."""
    with reporting(ctx) as progress:
        from .job import resolve_job

        layer = settings_from_options(options)
        if from_manifest is not None:
            if image or sidecar or trajectory or preset_dirs or layer:
                raise LyraAssetsError("--from-manifest builds exactly what the manifest records; give it alone "
                                      "(with -o and --force if needed)")
            spec = _recorded_spec(from_manifest, progress)
        elif image is None:
            raise LyraAssetsError("give the concept IMAGE to build (or --from-manifest out/<name>/manifest.json)")
        else:
            spec = resolve_job(image, layer, sidecar=sidecar, trajectory=trajectory, preset_dirs=list(preset_dirs))
        from .pipeline import build as run_build

        result = run_build(spec, out_dir=out_dir, force=force, progress=progress)
        finish(ctx, f"asset: {result.glb}", result.outputs)


@main.command()
@click.argument("walkthrough", type=click.Path(path_type=Path))
@output_options
@asset_options
@click.option("--name", help="Asset name. [the walkthrough's parent folder]")
@click.pass_context
def mesh(ctx: click.Context, walkthrough: Path, out_dir: Path, force: bool, name: str | None,
         **options: Any) -> None:
    """The asset stages alone, on a saved WALKTHROUGH folder: writes OUT/<name>/<name>.glb."""
    with reporting(ctx) as progress:
        if not walkthrough.is_dir():
            raise LyraAssetsError(f"{walkthrough}: not a walkthrough folder (run `lyra-assets generate` to make one)")
        from .pipeline import mesh as run_mesh

        result = run_mesh(walkthrough, out_dir, name, options=settings_from_options(options), force=force,
                          progress=progress)
        finish(ctx, f"asset: {result.glb}", result.outputs)


@main.command("warm-up")
@click.pass_context
def warm_up(ctx: click.Context) -> None:
    """Compile the kernels into your cache folder now, so your first build does not (once, after install)."""
    with reporting(ctx) as progress:
        from .warmup import warm_up as run_warm_up

        result = run_warm_up(progress)
        done = (f"compiled {len(result.compiled)} kernels" if result.compiled else "every kernel was compiled already")
        finish(ctx, f"{done} ({result.seconds:.0f} s); cache: {result.cache}",
               {"cache": result.cache, "compiled": result.compiled})


@main.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--preset", "-p", help="The new segment's motion, from the chosen pose. [the world's preset]")
@click.option("--trajectory", type=click.Path(path_type=Path),
              help="The new segment's cameras as a Lyra trajectory.npz, relative to its first camera (placed at "
                   "the chosen pose), instead of a preset's motion.")
@click.option("--in-world", is_flag=True, help="The --trajectory cameras are in the world's frame already (the "
                                               "first camera of the walkthrough): they start where they start.")
@click.option("--from-frame", type=int, help="Start at this frame's camera; negative counts from the end. [-1]")
@click.option("--frames", type=int, help="Frames of the new segment. [the world's, or the file's]")
@asset_options
@click.pass_context
def extend(ctx: click.Context, folder: Path, preset: str | None, trajectory: Path | None, in_world: bool,
           from_frame: int | None, **options: Any) -> None:
    """Explore further: add a segment to the world in FOLDER (out/<name>) and rebuild its asset."""
    with reporting(ctx) as progress:
        from .pipeline import extend as run_extend

        result = run_extend(folder, preset, trajectory, from_frame, in_world=in_world,
                            options=settings_from_options(options), progress=progress)
        finish(ctx, f"asset: {result.glb}", result.outputs)


def _recorded_spec(manifest_path: Path, progress):
    from .provenance import Provenance

    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LyraAssetsError(f"{manifest_path}: not a readable manifest.json ({exc})") from exc
    if not isinstance(manifest, dict) or "provenance" not in manifest:
        raise LyraAssetsError(f"{manifest_path}: has no provenance record; give the manifest.json of a build")
    recorded = Provenance.from_json(manifest["provenance"], str(manifest_path))
    if recorded.segments:  # each extension was generated from the world before it, so it is not replayed here
        progress("notice", 1, 1, f"{manifest_path}: this world was extended {len(recorded.segments)} time(s); "
                                 f"--from-manifest rebuilds its first segment only (`lyra-assets extend` adds more)")
    return recorded.spec()


@main.group()
def generators() -> None:
    """List the image-to-world generators."""


@generators.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def generators_list(ctx: click.Context, as_json: bool) -> None:
    """The generators, and which need a GPU."""
    from . import generators as registry

    with reporting(ctx):
        found = registry.available()
        if as_json:
            click.echo(json.dumps([g.to_json() | {"default": g.name == registry.DEFAULT} for g in found], indent=2))
        else:
            for g in found:
                gpu = "GPU" if g.needs_gpu else "CPU"
                default = " (default)" if g.name == registry.DEFAULT else ""
                click.echo(f"{g.name:<8} {gpu}  {g.summary}{default}")


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
