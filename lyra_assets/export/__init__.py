"""Export: one binary glTF per level asset, and a preview sheet of the input, the walkthrough and the LODs."""
from .gltf import write_glb
from .preview import render_preview

__all__ = ["render_preview", "write_glb"]
