"""The settings tables a job is made of, besides the preset's: `[assets]`, `[fusion]` and `[export]`.

Every layer of settings (built-in defaults, a drop folder's defaults.toml, a preset, a sidecar, the command
line or the add-on) is a table of the same shape; job.py merges them and validates the result here, once.
These models are light (pydantic only) so that input errors are found before any heavy import.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import LyraAssetsError

MIN_TEXTURE_SIZE = 64
LOD_STEP = 0.25  # `lods = n`: each further level keeps a quarter of the one before


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class AssetSettings(_Table):
    """`[assets]`: what the asset stages make. `lods = n` is a shorthand for n - 1 quartering `lod_ratios`."""

    lod0_triangles: int = Field(150_000, ge=4, description="triangle budget of LOD0")
    lod_ratios: tuple[float, ...] = Field((0.25, 0.0625, 0.015625),
                                          description="of LOD0's triangles, for LOD1..LODn, decreasing")
    texture_size: int = Field(2048, description="LOD0's texture side in texels; level k gets texture_size >> k")
    texels_per_metre: float | None = Field(None, gt=0, description="LOD0's texel density [fills texture_size]")
    padding: int = Field(4, ge=1, description="gutter texels around every chart, so mipmaps don't bleed")
    collider_triangles: int = Field(2000, ge=4, description="triangle budget of the collision proxy")

    @model_validator(mode="before")
    @classmethod
    def _lods_shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and "lods" in data:
            data = dict(data)
            data["lod_ratios"] = lod_ratios(data.pop("lods"))
        return data

    @field_validator("lod_ratios")
    @classmethod
    def _decreasing(cls, ratios: tuple[float, ...]) -> tuple[float, ...]:
        if not ratios or not all(0 < r < 1 for r in ratios) or list(ratios) != sorted(ratios, reverse=True):
            raise ValueError(f"must decrease within (0, 1), got {list(ratios)}")
        return ratios

    @field_validator("texture_size")
    @classmethod
    def _power_of_two(cls, size: int) -> int:
        if size < MIN_TEXTURE_SIZE or size & (size - 1):
            raise ValueError(f"must be a power of two >= {MIN_TEXTURE_SIZE}, got {size}")
        return size

    @property
    def levels(self) -> int:
        return 1 + len(self.lod_ratios)

    def texture_size_of(self, level: int) -> int:
        return max(self.texture_size >> level, MIN_TEXTURE_SIZE)


def lod_ratios(lods: Any) -> tuple[float, ...]:
    """`lods = n` (LOD0 included) as ratios of LOD0's triangles."""
    if isinstance(lods, bool) or not isinstance(lods, int) or not 2 <= lods <= 8:
        raise ValueError(f"lods must be a whole number from 2 to 8, got {lods!r}")
    return tuple(LOD_STEP**k for k in range(1, lods))


class FusionSettings(_Table):
    """`[fusion]`: how the walkthrough is fused into one mesh."""

    voxel_size_m: float | None = Field(None, gt=0, le=10, description="TSDF voxel size [from the scene's extent]")


# The engine profiles export/profiles.py writes (gltf: the default layout).
ProfileName = Literal["gltf", "unity", "unreal", "godot", "web"]


class ExportSettings(_Table):
    """`[export]`: which files the asset is written as."""

    formats: tuple[Literal["glb", "usd"], ...] = Field(
        ("glb",), min_length=1, description="file formats to write: glb (always written), usd (.usdz with physics)")
    profiles: tuple[ProfileName, ...] = Field(("gltf",), min_length=1,
                                              description="engine profiles of the glTF, one file each")

    @field_validator("formats", "profiles")
    @classmethod
    def _no_repeats(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(names))

    @field_validator("formats")
    @classmethod
    def _glb_always(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        """The GLB is the asset every surface reads (CLI, daemon, add-on); other formats come next to it."""
        return tuple(dict.fromkeys(("glb", *names)))


TABLES: dict[str, type[_Table]] = {"assets": AssetSettings, "fusion": FusionSettings, "export": ExportSettings}


def validated(model: type[BaseModel], data: Any, source: str, label: str) -> Any:
    """`model` from `data`, or a project error naming the source, the table and every problem."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise LyraAssetsError(f"{source}: {label} {describe(exc)}") from exc


def describe(exc: ValidationError) -> str:
    """Pydantic's errors as one line: `key: problem; key: problem` (unknown keys listed with what is allowed)."""
    problems = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "value"
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown key {key!r}")
        else:
            problems.append(f"{key}: {err['msg']}")
    return "; ".join(problems)
