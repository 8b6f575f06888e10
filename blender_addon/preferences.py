"""The add-on's preferences: how to reach the pipeline, and the defaults a new job starts from."""
from __future__ import annotations

import os
import tempfile

import bpy

from . import protocol


class LyraAssetsPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    runner: bpy.props.EnumProperty(
        name="Run the pipeline with",
        items=[
            (protocol.EXECUTABLE, "lyra-assets command", "The lyra-assets executable (on PATH, or its full path)"),
            (protocol.PYTHON, "Python interpreter", "A Python with lyra-assets installed: runs python -m lyra_assets"),
        ],
        default=protocol.EXECUTABLE,
    )
    executable: bpy.props.StringProperty(
        name="lyra-assets executable", subtype='FILE_PATH', default="lyra-assets",
        description="Full path of the lyra-assets command (for example .venv/bin/lyra-assets), "
                    "or just its name when it is on the PATH Blender was started with")
    python: bpy.props.StringProperty(
        name="Python interpreter", subtype='FILE_PATH',
        description="A Python with lyra-assets installed (for example .venv/bin/python)")
    default_preset: bpy.props.StringProperty(
        name="Default preset", description="Walkthrough preset of new jobs; empty: the pipeline's default")
    default_generator: bpy.props.StringProperty(
        name="Default generator", description="Image-to-world generator of new jobs; empty: the pipeline's "
                                              "default (layout: no GPU, no weights)")
    output_dir: bpy.props.StringProperty(
        name="Output folder", subtype='DIR_PATH', default="//lyra_assets/",
        description="Where assets are built (in <folder>/<image name>/); // is the .blend file's folder")

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "runner")
        layout.prop(self, "executable" if self.runner == protocol.EXECUTABLE else "python")
        layout.prop(self, "default_preset")
        layout.prop(self, "default_generator")
        layout.prop(self, "output_dir")

    def base_command(self) -> list[str]:
        path = self.executable if self.runner == protocol.EXECUTABLE else self.python
        return protocol.pipeline_command(self.runner, bpy.path.abspath(path))

    def output_folder(self) -> str:
        """The output folder as an absolute path; relative to the system's temporary folder while the .blend
        file has never been saved (Blender's // then has no folder to mean)."""
        folder = self.output_dir or "//lyra_assets/"
        if folder.startswith("//") and not bpy.data.filepath:
            return os.path.join(tempfile.gettempdir(), folder[2:])
        return os.path.abspath(bpy.path.abspath(folder))


def get(context) -> LyraAssetsPreferences:
    return context.preferences.addons[__package__].preferences
