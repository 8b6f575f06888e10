"""Image-to-world generators behind one interface, imported lazily so the core never imports torch.

A generator turns the concept image and a camera path into a Walkthrough. Before that, `survey` says what
it knows of the scene (its depth and free space), so presets can scale their motion and keep clear of walls.
"""
from __future__ import annotations

import importlib
from typing import Any, Protocol

from ..errors import LyraAssetsError
from ..images import ConceptImage
from ..motions import FreeSpace
from ..presets import Preset
from ..progress import Progress
from ..trajectory import CameraPath
from ..walkthrough import Walkthrough

# name -> "module:class"; a backend's heavy imports happen only when it is chosen.
REGISTRY = {
    "layout": "lyra_assets.generators.layout:LayoutGenerator",
    "lyra2": "lyra_assets.generators.lyra2:Lyra2Generator",
    "depth": "lyra_assets.generators.depth:DepthGenerator",
}
DEFAULT = "layout"


class Generator(Protocol):
    name: str
    licence: str  # of the model weights the output was made with

    def survey(self, image: ConceptImage) -> FreeSpace: ...

    def generate(self, image: ConceptImage, path: CameraPath, progress: Progress) -> Walkthrough: ...


def create(name: str, preset: Preset, settings: dict[str, Any] | None = None, source: str = "settings") -> Generator:
    """The generator called `name`, configured by the preset and its own settings table (from a sidecar)."""
    if name not in REGISTRY:
        raise LyraAssetsError(f"unknown generator {name!r}; available: {', '.join(sorted(REGISTRY))}")
    module_name, class_name = REGISTRY[name].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(preset, settings or {}, source)
