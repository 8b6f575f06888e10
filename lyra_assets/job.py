"""A job: the concept image plus everything that decides the result, validated and hashed (the job key).

Settings come, weakest first, from the preset, a sidecar file next to the image (`foo.toml` or `foo.json`
beside `foo.png`) and the command line. A sidecar may hold:

    preset = "walk_forward"       generator = "layout"       prompt = "a stone corridor at dusk"
    [camera] / [path] / [scene]   any preset key, e.g. [camera] hfov_deg = 70 or [scene] eye_height_m = 1.7
    [layout]                      the layout generator's hints: scene = "auto" | "room" | "outdoor" |
                                  "aerial", vanishing_point = [x, y], back_wall = [x0, y0, x1, y1],
                                  horizon_px, roll_deg (concept-image pixels, degrees), camera_height_m,
                                  far_m (metres)

Unknown keys are errors that name the key and the file.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .errors import LyraAssetsError
from .generators import DEFAULT as DEFAULT_GENERATOR
from .generators import REGISTRY as GENERATORS
from .images import ConceptImage, load_concept_image
from .presets import PRESET_SECTIONS, Preset, deep_merge, load_preset
from .trajectory import CameraPath

SIDECAR_SUFFIXES = (".toml", ".json")
DEFAULT_PRESET = "walk_forward"


@dataclass(frozen=True)
class Job:
    image: ConceptImage
    image_path: Path
    name: str  # safe file name for outputs
    preset: Preset
    generator: str
    generator_settings: dict[str, Any]
    prompt: str | None
    trajectory: CameraPath | None  # a path given as a file replaces the preset's motion
    sidecar: Path | None

    @property
    def settings(self) -> dict[str, Any]:
        """Everything that decides the result, resolved in full (saved in every manifest)."""
        return {"preset": self.preset.model_dump(), "generator": self.generator,
                "generator_settings": self.generator_settings, "prompt": self.prompt,
                "trajectory": None if self.trajectory is None else _path_digest(self.trajectory)}

    @property
    def key(self) -> str:
        """Hash of the image bytes, the resolved settings and the pipeline version."""
        blob = json.dumps([self.image.sha256, self.settings, __version__], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]


def load_job(image_path: str | Path, preset: str | None = None, generator: str | None = None,
             sidecar: str | Path | None = None, trajectory: str | Path | None = None,
             preset_dirs: list[Path] | None = None, overrides: dict[str, Any] | None = None) -> Job:
    """Read and validate everything a job needs, before any work starts."""
    image_path = Path(image_path)
    image = load_concept_image(image_path)
    sidecar_path = Path(sidecar) if sidecar else find_sidecar(image_path)
    side = read_sidecar(sidecar_path) if sidecar_path else {}

    generator = generator or side.pop("generator", None) or DEFAULT_GENERATOR
    side.pop("generator", None)
    if generator not in GENERATORS:
        raise LyraAssetsError(f"unknown generator {generator!r}; available: {', '.join(sorted(GENERATORS))}")
    preset_name = preset or side.pop("preset", None) or DEFAULT_PRESET
    side.pop("preset", None)
    prompt = side.pop("prompt", None)
    generator_settings = side.pop(generator, {})
    preset_overrides = {k: side.pop(k) for k in PRESET_SECTIONS if k in side}
    for name in set(side) & set(GENERATORS):  # another backend's table: harmless, kept out of the job key
        side.pop(name)
    if side:
        allowed = ["preset", "generator", "prompt", *PRESET_SECTIONS, *sorted(GENERATORS)]
        raise LyraAssetsError(f"{sidecar_path}: unknown key(s) {', '.join(map(repr, side))}; "
                              f"a sidecar may hold: {', '.join(allowed)}")

    path = None
    if trajectory is not None:
        path = CameraPath.from_lyra_npz(trajectory)
        hfov = math.degrees(2 * math.atan(path.width / 2 / path.K[0, 0, 0]))
        overrides = deep_merge(overrides or {}, {"camera": {"hfov_deg": round(hfov, 6), "width": path.width,
                                                        "height": path.height}})
    merged = deep_merge(preset_overrides, overrides or {})
    source = f"{sidecar_path} / command line" if sidecar_path else "command-line settings"
    resolved = load_preset(preset_name, preset_dirs, merged, source)
    return Job(image, image_path, safe_name(image_path.stem), resolved, generator, generator_settings,
               prompt if prompt is None else str(prompt), path, sidecar_path)


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
        raise LyraAssetsError(f"{path}: sidecar file not found") from exc
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # TOMLDecodeError and JSONDecodeError too
        raise LyraAssetsError(f"{path}: not a valid {path.suffix[1:].upper()} sidecar ({exc})") from exc
    if not isinstance(data, dict):
        raise LyraAssetsError(f"{path}: a sidecar must be a table of settings, not {type(data).__name__}")
    return data


def safe_name(stem: str) -> str:
    """A file name safe on every OS: letters, digits, '-', '_' and '.'; never hidden, never empty."""
    name = unicodedata.normalize("NFC", stem)
    name = re.sub(r"[^\w.-]+", "_", name, flags=re.UNICODE).strip("._")[:100]
    return name or "asset"


def _path_digest(path: CameraPath) -> str:
    return hashlib.sha256(path.c2w.tobytes() + path.K.tobytes() + f"{path.width}x{path.height}".encode()).hexdigest()
