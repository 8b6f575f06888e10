"""Export: binary glTF per level asset and engine profile, and a preview sheet of the input, the walkthrough
and the LODs."""
from .gltf import write_glb
from .preview import render_preview
from .profiles import PROFILES, write_profile

__all__ = ["PROFILES", "render_preview", "write_glb", "write_profile"]
