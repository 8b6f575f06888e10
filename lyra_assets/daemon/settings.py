"""ROOT/defaults.toml, and turning a claimed image (with its sidecar) into a validated plan and its job key.

defaults.toml holds settings for every job of the drop folder; a job's sidecar wins over it:

    preset = "walk_forward"          generator = "layout"
    [camera] / [path] / [scene]      any preset key, e.g. [path] frames = 41
    [assets]                         the asset stages: lod0_triangles, texture_size, ...
    voxel_size_m = 0.05              fusion voxel size (default: from the scene's extent)

It is read once when the daemon starts; restart the daemon after editing it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import LyraAssetsError
from ..generators import REGISTRY as GENERATORS
from ..job import DEFAULT_PRESET, find_sidecar, load_job, read_sidecar
from ..presets import PRESET_SECTIONS, deep_merge, load_preset

DEFAULTS_KEYS = ("preset", "generator", *PRESET_SECTIONS, "assets", "voxel_size_m")
# Generator settings that name files or programs on the machine (where a model lives, which Python runs it,
# where it writes). A drop folder is open to everyone who can drop a file, so these come from whoever runs
# the daemon (the environment, e.g. LYRA2_*), never from a dropped sidecar: dropping a file must not make
# the farm run a program or write outside out/.
OPERATOR_ONLY = {"lyra2": ("root", "checkpoints", "python", "work_dir"), "depth": ("model", "inpaint")}


@dataclass(frozen=True)
class Defaults:
    preset: str | None = None
    generator: str | None = None
    sections: dict[str, Any] = field(default_factory=dict)  # [camera], [path], [scene]
    assets: dict[str, Any] = field(default_factory=dict)  # AssetSettings fields
    voxel_size_m: float | None = None

    @classmethod
    def load(cls, path: Path) -> Defaults:
        if not path.exists():
            return cls()
        data = read_sidecar(path)
        unknown = set(data) - set(DEFAULTS_KEYS)
        if unknown:
            raise LyraAssetsError(f"{path}: unknown key(s) {', '.join(map(repr, sorted(unknown)))}; "
                                  f"defaults.toml may hold: {', '.join(DEFAULTS_KEYS)}")
        defaults = cls(data.get("preset"), data.get("generator"),
                       {k: data[k] for k in PRESET_SECTIONS if k in data}, data.get("assets", {}),
                       data.get("voxel_size_m"))
        # Check everything now, so a typo stops the daemon at start instead of failing every job.
        if defaults.generator is not None and defaults.generator not in GENERATORS:
            raise LyraAssetsError(f"{path}: unknown generator {defaults.generator!r}; "
                                  f"available: {', '.join(sorted(GENERATORS))}")
        load_preset(defaults.preset or DEFAULT_PRESET, None, defaults.sections, str(path))
        asset_settings(defaults.assets, str(path))
        if defaults.voxel_size_m is not None and not (isinstance(defaults.voxel_size_m, (int, float))
                                                      and defaults.voxel_size_m > 0):
            raise LyraAssetsError(f"{path}: voxel_size_m must be a positive number of metres")
        return defaults


def asset_settings(table: dict[str, Any], source: str):
    """The asset stages' settings from a TOML table, with an error that names the file."""
    from ..assets.level import AssetSettings  # the asset stages are heavy; only what uses them imports them

    if not isinstance(table, dict):
        raise LyraAssetsError(f"{source}: [assets] must be a table")
    try:
        return AssetSettings(**table)
    except (TypeError, ValueError, LyraAssetsError) as exc:  # an unknown key, a wrong type, a value out of range
        raise LyraAssetsError(f"{source}: bad [assets] setting ({exc})") from exc


@dataclass(frozen=True)
class Plan:
    """What a run is given: the settings validated at claim time, so a run builds exactly what was checked."""

    preset: str | None
    generator: str
    overrides: dict[str, Any]
    assets: dict[str, Any]
    voxel_size_m: float | None
    pipeline_key: str  # the pipeline's own job key, as its manifests record it

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def plan_job(image: Path, defaults: Defaults) -> tuple[Plan, str]:
    """Validate a claimed image and its sidecar (next to it, as the CLI finds it) under the folder's defaults.
    Returns the plan and the job key. Raises LyraAssetsError with what to fix."""
    sidecar = find_sidecar(image)
    side = read_sidecar(sidecar) if sidecar else {}
    for table, keys in OPERATOR_ONLY.items():
        given = side.get(table)
        named = sorted(set(keys) & set(given)) if isinstance(given, dict) else []
        if named:
            raise LyraAssetsError(f"{sidecar}: [{table}] {', '.join(named)} cannot be set from a drop folder; "
                                  f"remove it (whoever runs the daemon sets it, e.g. with LYRA2_* variables)")
    preset = side.get("preset") or defaults.preset
    generator = side.get("generator") or defaults.generator
    # load_job lets `overrides` win over the sidecar; putting the sidecar's sections on top of the defaults
    # here makes the sidecar win over the defaults, as an artist expects.
    overrides = deep_merge(defaults.sections, {k: side[k] for k in PRESET_SECTIONS if k in side})
    job = load_job(image, preset, generator, sidecar, None, None, overrides)
    plan = Plan(preset, job.generator, overrides, defaults.assets, defaults.voxel_size_m, job.key)
    return plan, job_key(plan)


def job_key(plan: Plan) -> str:
    """The pipeline's key covers the image, the walkthrough settings and the version; the asset settings
    change the result too, so they join the key when the folder sets any."""
    if not plan.assets and plan.voxel_size_m is None:
        return plan.pipeline_key
    blob = json.dumps([plan.pipeline_key, plan.assets, plan.voxel_size_m], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]
