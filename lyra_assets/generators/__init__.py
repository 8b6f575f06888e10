"""Image-to-world generators behind one interface, imported lazily so the core never imports torch.

A generator turns the concept image and a camera path into a Walkthrough. Before that, `survey` says what
it knows of the scene (its depth and free space), so presets can scale their motion and keep clear of walls.
The registry below is the one answer to "which generators exist, and which need a GPU" for the command line
(`lyra-assets generators list`), the drop folder, the Ray executor and the Blender add-on.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from ..errors import LyraAssetsError

if TYPE_CHECKING:  # only for the interface's types: a job is resolved without loading any stage
    from pydantic import BaseModel

    from ..images import ConceptImage
    from ..motions import FreeSpace
    from ..presets import Preset
    from ..progress import Progress
    from ..trajectory import CameraPath
    from ..walkthrough import Walkthrough

# name -> "module:class"; a backend's imports happen only when it is asked about or chosen.
REGISTRY = {
    "layout": "lyra_assets.generators.layout:LayoutGenerator",
    "lyra2": "lyra_assets.generators.lyra2:Lyra2Generator",
    "depth": "lyra_assets.generators.depth:DepthGenerator",
}
DEFAULT = "layout"


class Generator(Protocol):
    """What every backend declares and does. The class attributes are read without making one."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line for listings
    licence: str  # of the model weights the output is made with (may depend on the settings)
    needs_gpu: ClassVar[bool]  # the Ray executor sends it to a GPU worker; the daemon refuses it without one
    takes_prompt: ClassVar[bool]  # `set_text` is called with the job's prompt before `generate`
    operator_only: ClassVar[tuple[str, ...]]  # its settings that name files or programs: never from a drop
    notice: str | None  # a line the user must read before a run (e.g. a research-only licence)
    settings_model: ClassVar[type[BaseModel]]  # the schema of its own table, checked when a job is resolved

    def __init__(self, preset: Preset, settings: dict[str, Any], source: str) -> None: ...

    def set_text(self, prompt: str | None, image_path: Any) -> None: ...

    def survey(self, image: ConceptImage) -> FreeSpace: ...

    def generate(self, image: ConceptImage, path: CameraPath, progress: Progress,
                 memory: Walkthrough | None = None) -> Walkthrough:
        """Frames along `path`. `memory` is an earlier walkthrough of the same world to continue from: what
        it saw is rendered from it, never invented again."""


@dataclass(frozen=True)
class GeneratorInfo:
    name: str
    summary: str
    needs_gpu: bool
    takes_prompt: bool
    operator_only: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "summary": self.summary, "needs_gpu": self.needs_gpu,
                "takes_prompt": self.takes_prompt}


@cache
def generator_class(name: str) -> type[Generator]:
    if name not in REGISTRY:
        raise LyraAssetsError(f"unknown generator {name!r}; available: {', '.join(sorted(REGISTRY))}")
    module_name, class_name = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def info(name: str) -> GeneratorInfo:
    cls = generator_class(name)
    return GeneratorInfo(name, cls.summary, cls.needs_gpu, cls.takes_prompt, tuple(cls.operator_only))


def available() -> list[GeneratorInfo]:
    return [info(name) for name in sorted(REGISTRY)]


def create(name: str, preset: Preset, settings: dict[str, Any] | None = None, source: str = "settings") -> Generator:
    """The generator called `name`, configured by the preset and its own settings table."""
    return generator_class(name)(preset, settings or {}, source)
