"""Walkthrough presets: one TOML file each, validated, with `inherits` and user preset folders.

A preset says how the camera moves (`[path]`), what it sees with (`[camera]`) and what the scene is assumed
to be like (`[scene]`). Distances are metres for a scene whose first view is `reference_depth_m` deep; they
scale with the depth the generator actually sees. Unknown keys are errors, so a typo never passes silently.
Search order: folders given by the user (--preset-dir, LYRA_ASSETS_PRESETS), then the built-in presets/.
"""
from __future__ import annotations

import copy
import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import LyraAssetsError

SCHEMA_VERSION = 1
MOTIONS = ("dolly", "yaw", "orbit", "out_and_back", "strafe", "zoom")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # nan: "not finite", not "> 100"


class CameraSettings(_Strict):
    hfov_deg: float = Field(60.0, ge=10.0, le=150.0, description="horizontal field of view, input and frames")
    width: int = Field(832, ge=64, le=4096, multiple_of=2, description="frame width in pixels")
    height: int = Field(480, ge=64, le=4096, multiple_of=2, description="frame height in pixels")


class PathSettings(_Strict):
    motion: Literal["dolly", "yaw", "orbit", "out_and_back", "strafe", "zoom"] = "dolly"
    frames: int = Field(121, ge=2, le=4001)
    fps: float = Field(16.0, gt=0.0, le=240.0)
    easing: Literal["linear", "smooth"] = "smooth"
    distance_m: float = Field(0.0, ge=-100.0, le=100.0, description="travel at the reference depth")
    yaw_deg: float = Field(360.0, ge=-720.0, le=720.0, description="turn of a `yaw` motion")
    arc_deg: float = Field(60.0, ge=-180.0, le=180.0, description="arc swept by an `orbit` motion")
    back_fraction: float = Field(0.5, ge=0.0, le=1.0, description="`zoom`: how far behind the start it pulls out")
    lyra_frame_count: bool = Field(False, description="round frames to Lyra 2.0's 1 + 80k")


class SceneSettings(_Strict):
    eye_height_m: float = Field(1.6, gt=0.1, le=100.0, description="camera height above the floor")
    margin_m: float = Field(0.3, ge=0.0, le=10.0, description="closest a camera may come to a seen surface")
    reference_depth_m: float = Field(8.0, gt=0.0, le=1000.0, description="scene depth the distances are for")


class Preset(_Strict):
    schema_version: Literal[1]
    name: str
    description: str = ""
    camera: CameraSettings = CameraSettings()
    path: PathSettings = PathSettings()
    scene: SceneSettings = SceneSettings()


PRESET_SECTIONS = ("camera", "path", "scene")
ASSET_SECTIONS = ("assets", "fusion")  # a preset may also say how its asset is made (validated in settings.py)


def preset_dirs(extra: list[Path] | None = None) -> list[Path]:
    dirs = [Path(p) for p in (extra or [])]
    dirs += [Path(p) for p in os.environ.get("LYRA_ASSETS_PRESETS", "").split(os.pathsep) if p]
    dirs.append(Path(str(resources.files("lyra_assets.builtin_presets"))))
    return dirs


def available_presets(extra_dirs: list[Path] | None = None) -> dict[str, Path]:
    """Preset name -> file; a user folder's preset hides a built-in one of the same name."""
    found: dict[str, Path] = {}
    for folder in preset_dirs(extra_dirs):
        if not folder.is_dir():
            raise LyraAssetsError(f"preset folder {folder} does not exist; check --preset-dir/LYRA_ASSETS_PRESETS")
        for file in sorted(folder.glob("*.toml")):
            found.setdefault(file.stem, file)
    return found


def load_preset(name: str, extra_dirs: list[Path] | None = None, overrides: dict[str, Any] | None = None,
                overrides_source: str = "overrides") -> Preset:
    """The named preset with its parents merged in, then `overrides` (a sidecar's sections) on top."""
    known = available_presets(extra_dirs)
    raw = _resolved_raw(name, known, chain=())
    for section in ASSET_SECTIONS:
        raw.pop(section, None)
    preset = _validate(raw, str(known[name]))
    if not overrides:
        return preset
    merged = deep_merge(preset.model_dump(), overrides)
    return _validate(merged, overrides_source)


def preset_table(name: str, extra_dirs: list[Path] | None = None) -> dict[str, Any]:
    """The named preset as a layer of settings: its sections, [assets] and [fusion], its parents merged in."""
    known = available_presets(extra_dirs)
    raw = _resolved_raw(name, known, chain=())
    load_preset(name, extra_dirs)  # its own sections are checked against the schema, naming its file
    for section in ASSET_SECTIONS:
        if not isinstance(raw.get(section, {}), dict):
            raise LyraAssetsError(f"{known[name]}: [{section}] must be a table")
    return {k: v for k, v in raw.items() if k in PRESET_SECTIONS + ASSET_SECTIONS}


def _resolved_raw(name: str, known: dict[str, Path], chain: tuple[str, ...]) -> dict[str, Any]:
    if name not in known:
        raise LyraAssetsError(f"unknown preset {name!r}; known presets: {', '.join(sorted(known)) or 'none'}")
    if name in chain:
        raise LyraAssetsError(f"preset {name!r} inherits itself: {' -> '.join(chain + (name,))}")
    file = known[name]
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise LyraAssetsError(f"{file}: not valid TOML ({exc})") from exc
    parent = raw.pop("inherits", None)
    raw["name"] = name
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise LyraAssetsError(f"{file}: `inherits` must be a preset name, got {parent!r}")
    base = _resolved_raw(parent, known, chain + (name,))
    base.pop("description", None)
    return deep_merge(base, raw)


def _validate(raw: dict[str, Any], source: str) -> Preset:
    try:
        return Preset.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(part) for part in err["loc"])
            if err["type"] == "extra_forbidden":
                section = err["loc"][0] if len(err["loc"]) > 1 else None
                allowed = _allowed_keys(section)
                problems.append(f"unknown key {key!r} (allowed here: {', '.join(allowed)})")
            else:
                problems.append(f"{key}: {err['msg']}")
        raise LyraAssetsError(f"{source}: " + "; ".join(problems)) from exc


def _allowed_keys(section: Any) -> list[str]:
    model = Preset.model_fields[section].annotation if section in PRESET_SECTIONS else Preset
    return sorted(model.model_fields)


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
