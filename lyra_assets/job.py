"""A job: the concept image plus every setting that decides the result, resolved once into a JobSpec.

Settings come in layers, each a table of the same shape (a TOML/JSON sidecar, a drop folder's defaults.toml,
the command line's or the add-on's options, or a preset file):

    preset = "walk_forward"      generator = "layout"      prompt = "a stone corridor at dusk"
    [camera] [path] [scene]      the preset's sections, e.g. [path] frames = 41, [scene] eye_height_m = 1.7
    [assets]                     lod0_triangles, lods (or lod_ratios), texture_size, padding, collider_triangles
    [fusion]                     voxel_size_m
    [export]                     formats, profiles
    [layout] [lyra2] ...         one table per generator, named after it (only the chosen one is used)

Weakest first: built-in defaults -> the preset -> the drop folder's defaults.toml -> the sidecar -> the
command line or add-on. The preset (a named camera motion, with its own [assets]/[fusion] if it wants) sits
under defaults.toml so that a farm's house settings (say, 9 small frames for blockouts) hold whichever preset
an artist picks; the artist's sidecar, and then whoever runs the command, have the last word. `preset` and
`generator` are names, chosen by the strongest layer that sets them. This module is the only code that
knows the order. Unknown keys and wrong types are errors that name the key and the file.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
import unicodedata
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, generators
from .errors import LyraAssetsError
from .images import probe_concept_image
from .presets import PRESET_SECTIONS, Preset, available_presets, deep_merge, load_preset, preset_table
from .settings import TABLES, AssetSettings, ExportSettings, FusionSettings, validated
from .trajectory import CameraPath

SIDECAR_SUFFIXES = (".toml", ".json")
DEFAULT_PRESET = "walk_forward"
NAMES = ("preset", "generator", "prompt")
NAME_BYTES = 100  # output names stay far below the 255-byte file-name limit, with room for suffixes


@dataclass(frozen=True)
class Layer:
    """One table of settings and where it came from (for error messages and the manifest)."""

    table: dict[str, Any]
    source: str


@dataclass(frozen=True)
class PathFile:
    """A camera path from a Lyra trajectory.npz, and what was done to it to fit the job."""

    file: Path
    poses_in_file: int
    frames: int
    size: tuple[int, int]  # width, height of the frames
    resampled: bool
    digest: str  # of the cameras the job uses, so the key changes with them

    def to_json(self) -> dict[str, Any]:
        return {"file": str(self.file), "poses_in_file": self.poses_in_file, "frames": self.frames,
                "size": list(self.size), "resampled": self.resampled, "digest": self.digest}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PathFile:
        return cls(Path(data["file"]), int(data["poses_in_file"]), int(data["frames"]), tuple(data["size"]),
                   bool(data["resampled"]), str(data["digest"]))


@dataclass(frozen=True)
class JobSpec:
    """Everything that decides a job's result, resolved and validated; `key` is its one job key."""

    image_path: Path
    image_sha256: str
    name: str  # safe file name for outputs
    preset: Preset  # camera, path and scene, resolved
    generator: str
    generator_settings: dict[str, Any]  # the chosen generator's own table; it validates it
    prompt: str | None
    assets: AssetSettings
    fusion: FusionSettings
    export: ExportSettings
    sidecar: Path | None = None
    path_file: PathFile | None = None
    # The cameras from path_file, fitted to the job; None when only the record of them is known (a `mesh` of a
    # saved walkthrough needs no cameras).
    trajectory: CameraPath | None = field(default=None, compare=False)

    def settings(self) -> dict[str, Any]:
        """The resolved settings as one table of the layer shape: feeding it back in gives the same spec."""
        table: dict[str, Any] = {"preset": self.preset.name, "generator": self.generator}
        if self.prompt is not None:
            table["prompt"] = self.prompt
        table.update({k: getattr(self.preset, k).model_dump() for k in PRESET_SECTIONS})
        table.update({k: getattr(self, k).model_dump(mode="json") for k in TABLES})
        table[self.generator] = self.generator_settings
        return table

    @cached_property
    def key(self) -> str:
        """The job key: a hash of the image bytes, the resolved settings, the camera path and the version."""
        return _digest([self.image_sha256, self.settings(), self.path_file and self.path_file.digest, __version__])

    @cached_property
    def walk_key(self) -> str:
        """The same for what decides the walkthrough alone (not the asset stages): a saved walkthrough with
        this key can be made into an asset under any asset settings."""
        walk = {k: v for k, v in self.settings().items() if k not in TABLES}
        return _digest([self.image_sha256, walk, self.path_file and self.path_file.digest, __version__])

    def to_record(self) -> dict[str, Any]:
        """Plain JSON that `from_record` turns back into this spec (journal, manifests, --from-manifest)."""
        return {"image": str(self.image_path), "image_sha256": self.image_sha256, "name": self.name,
                "sidecar": None if self.sidecar is None else str(self.sidecar),
                "camera_path_file": None if self.path_file is None else self.path_file.to_json(),
                "settings": self.settings()}

    @classmethod
    def from_record(cls, record: dict[str, Any], options: dict[str, Any] | None = None,
                    source: str = "recorded job") -> JobSpec:
        """A recorded spec, with `options` (e.g. other asset settings) on top. The image is not read again."""
        try:
            image, sha, name, settings = (Path(record["image"]), record["image_sha256"], record["name"],
                                          record["settings"])
            path_file = record.get("camera_path_file")
        except (KeyError, TypeError) as exc:
            raise LyraAssetsError(f"{source}: not a job record (missing {exc})") from exc
        layers = [Layer(settings, source)] + ([Layer(options, "options")] if options else [])
        sidecar = Path(record["sidecar"]) if record.get("sidecar") else None
        trajectory = None if not path_file else PathFile.from_json(path_file)
        if trajectory is not None and trajectory.file.is_file():
            spec = _resolve(image, sha, name, layers, sidecar, trajectory.file, None)
            if spec.path_file.digest != trajectory.digest:
                raise LyraAssetsError(f"{trajectory.file}: the camera path file changed since the job was made; "
                                      f"its cameras differ from the recorded ones")
            return spec
        return _resolve(image, sha, name, layers, sidecar, trajectory, None)


def resolve_job(image: str | Path, options: dict[str, Any] | None = None, *, sidecar: str | Path | None = None,
                find_sidecar_next_to_image: bool = True, defaults: Layer | None = None,
                trajectory: str | Path | None = None, preset_dirs: list[Path] | None = None,
                drop_folder: bool = False, name: str | None = None) -> JobSpec:
    """Read and validate everything a job needs, before any work starts (and before heavy imports).

    `options` is the strongest layer (command line, add-on, a script); `defaults` a drop folder's
    defaults.toml. In a drop folder (`drop_folder`), a sidecar may not set a generator's locations.
    `name` names the outputs [the image's file name, made safe]."""
    image_path = Path(image)
    probe = probe_concept_image(image_path)
    if sidecar is None and find_sidecar_next_to_image:
        sidecar = find_sidecar(image_path)
    layers = [defaults] if defaults else []
    if sidecar is not None:
        side = Layer(read_sidecar(Path(sidecar)), str(sidecar))
        if drop_folder:
            refuse_operator_keys(side)
        layers.append(side)
    if options:
        layers.append(Layer(options, "command-line options"))
    return _resolve(image_path, probe.sha256, name or safe_name(image_path.stem), layers,
                    None if sidecar is None else Path(sidecar), trajectory, preset_dirs)


def check_settings(layers: list[Layer], preset_dirs: list[Path] | None = None) -> None:
    """Validate layers of settings as a job would, without an image (e.g. a drop folder's defaults.toml)."""
    _resolve(Path("settings-check"), "", "settings-check", layers, None, None, preset_dirs)


def check_asset_options(options: dict[str, Any] | None, source: str = "command-line options") -> None:
    """Options for the asset stages of a saved walkthrough (`mesh`): its own settings stay as recorded, so only
    [assets], [fusion] and [export] may be given; checked before the walkthrough is read."""
    unknown = sorted(set(options or {}) - set(TABLES))
    if unknown:
        raise LyraAssetsError(f"a saved walkthrough keeps its own {', '.join(unknown)} settings; "
                              f"`mesh` can change only {', '.join(TABLES)}")
    for key, table in (options or {}).items():
        validated(TABLES[key], table, source, f"[{key}]")


def check_layer(layer: Layer) -> None:
    """The shape of one table: known keys, names that are strings, tables that are tables."""
    known = (*NAMES, *PRESET_SECTIONS, *TABLES, *generators.REGISTRY)
    for key, value in layer.table.items():
        if key not in known:
            raise LyraAssetsError(f"{layer.source}: unknown key {key!r}; settings may hold: {', '.join(known)}")
        if key in NAMES and not isinstance(value, str):
            what = "text" if key == "prompt" else "a name"
            raise LyraAssetsError(f"{layer.source}: {key} must be {what} in quotes, e.g. {key} = \"...\", "
                                  f"not {value!r}")
        if key not in NAMES and not isinstance(value, dict):
            raise LyraAssetsError(f"{layer.source}: [{key}] must be a table (a [{key}] section), not {value!r}")


def refuse_operator_keys(layer: Layer) -> None:
    """Generator settings that name files or programs (where a model lives, which Python runs it) come from
    whoever runs the daemon, never from a dropped file: dropping a file must not make the farm run a program
    or read or write outside the drop folder."""
    for name in set(layer.table) & set(generators.REGISTRY):
        given = layer.table[name]
        named = sorted(set(generators.info(name).operator_only) & set(given)) if isinstance(given, dict) else []
        if named:
            raise LyraAssetsError(f"{layer.source}: [{name}] {', '.join(named)} cannot be set from a drop folder; "
                                  f"remove it: whoever runs the daemon sets it (in ROOT/defaults.toml or "
                                  f"the generator's environment variables)")


def _resolve(image_path: Path, sha256: str, name: str, layers: list[Layer], sidecar: Path | None,
             trajectory: str | Path | PathFile | None, preset_dirs: list[Path] | None) -> JobSpec:
    for layer in layers:
        check_layer(layer)
    chooser = {key: next((layer for layer in reversed(layers) if key in layer.table), None) for key in NAMES}
    chosen = {key: None if layer is None else layer.table[key] for key, layer in chooser.items()}
    generator = chosen["generator"] or generators.DEFAULT
    preset_name = chosen["preset"] or DEFAULT_PRESET
    for which, value, known in (("generator", generator, generators.REGISTRY),
                                ("preset", preset_name, available_presets(preset_dirs))):
        if value not in known:
            where = chooser[which].source if chooser[which] else "built-in default"
            raise LyraAssetsError(f"{where}: unknown {which} {value!r}; available: {', '.join(sorted(known))}")
    base = Layer(preset_table(preset_name, preset_dirs), f"preset {preset_name!r}")
    merged: dict[str, Any] = {}
    for layer in [base, *layers]:
        merged = deep_merge(merged, {k: v for k, v in layer.table.items() if k not in NAMES})
    source = " / ".join(layer.source for layer in layers) or f"preset {preset_name!r}"

    path_file, camera_path = (trajectory, None) if isinstance(trajectory, PathFile) else (None, None)
    if trajectory is not None and path_file is None:
        explicit: dict[str, Any] = {}
        for layer in layers:
            explicit = deep_merge(explicit, {k: layer.table[k] for k in ("camera", "path") if k in layer.table})
        camera_path, path_file, camera = _fit_path_file(Path(trajectory), explicit, merged)
        merged = deep_merge(merged, {"camera": camera, "path": {"frames": len(camera_path)}})

    preset = load_preset(preset_name, preset_dirs, {k: merged[k] for k in PRESET_SECTIONS if k in merged}, source)
    tables = {key: validated(model, merged.get(key, {}), source, f"[{key}]") for key, model in TABLES.items()}
    # The generator's own table is checked now too (a drop folder refuses a bad one at claim, not in a run);
    # the generator is given the table as written and validates it again when it is made.
    validated(generators.generator_class(generator).settings_model, merged.get(generator, {}), source,
              f"[{generator}]")
    return JobSpec(image_path, sha256, name, preset, generator, merged.get(generator, {}),
                   None if chosen["prompt"] is None else str(chosen["prompt"]), tables["assets"],
                   tables["fusion"], tables["export"], sidecar, path_file, camera_path)


def _fit_path_file(file: Path, explicit: dict[str, Any], merged: dict[str, Any]
                   ) -> tuple[CameraPath, PathFile, dict[str, Any]]:
    """A path from a file keeps its own cameras unless a layer above the preset asks for a frame count
    (resampled along the path, first and last pose kept) or a frame size (intrinsics scaled to it)."""
    path = CameraPath.from_lyra_npz(file)
    poses = len(path)
    frames = explicit.get("path", {}).get("frames")
    if frames is not None and frames != poses:
        if not isinstance(frames, int) or isinstance(frames, bool) or frames < 2:
            raise LyraAssetsError(f"[path] frames must be a whole number of at least 2, got {frames!r}")
        path = path.resampled(frames)
    if explicit.get("path", {}).get("lyra_frame_count", merged.get("path", {}).get("lyra_frame_count")):
        path = path.with_lyra_frame_count()
    size = explicit.get("camera", {})
    width, height = size.get("width", path.width), size.get("height", path.height)
    if (width, height) != (path.width, path.height):
        path = path.resized(width, height)
    hfov = math.degrees(2 * math.atan(path.width / 2 / path.K[0, 0, 0]))
    notes = PathFile(file, poses, len(path), (path.width, path.height), len(path) != poses, _path_digest(path))
    return path, notes, {"hfov_deg": round(hfov, 6), "width": path.width, "height": path.height}


def find_sidecar(image_path: Path) -> Path | None:
    found = [image_path.with_suffix(s) for s in SIDECAR_SUFFIXES if image_path.with_suffix(s).is_file()]
    if len(found) > 1:
        raise LyraAssetsError(f"{image_path}: both {found[0].name} and {found[1].name} are next to it; keep one")
    return found[0] if found else None


def read_sidecar(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except FileNotFoundError as exc:
        raise LyraAssetsError(f"{path}: settings file not found") from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # TOMLDecodeError and JSONDecodeError too
        raise LyraAssetsError(f"{path}: not a valid {path.suffix[1:].upper()} settings file ({exc})") from exc
    if not isinstance(data, dict):
        raise LyraAssetsError(f"{path}: a settings file must be a table of settings, not {type(data).__name__}")
    return data


def safe_name(stem: str, limit: int = NAME_BYTES) -> str:
    """A file name safe on every OS: letters, digits, '-', '_' and '.'; never hidden, never empty, and at
    most `limit` bytes in UTF-8 (file systems count bytes, not characters)."""
    name = unicodedata.normalize("NFC", stem)
    name = re.sub(r"[^\w.-]+", "_", name, flags=re.UNICODE).strip("._")
    name = name.encode("utf-8")[:limit].decode("utf-8", errors="ignore").rstrip("._")
    return name or "asset"


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _path_digest(path: CameraPath) -> str:
    data = np.ascontiguousarray(path.c2w).tobytes() + np.ascontiguousarray(path.K).tobytes()
    return hashlib.sha256(data + f"{path.width}x{path.height}".encode()).hexdigest()
