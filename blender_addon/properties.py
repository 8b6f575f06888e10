"""The job settings shown in the sidebar (one set per scene), and the preset list they offer."""
from __future__ import annotations

import zlib

import bpy

from . import preferences, protocol
from .runner import PipelineError, run_quick

DEFAULT_PRESET = "DEFAULT"


class Catalogue:
    """What the pipeline offers, asked of it (`lyra-assets presets list --json`, `generators list --json`) once
    per pipeline and again on Refresh, not on every redraw: the add-on keeps no list of its own.

    Blender reads the strings of dynamic enum items without owning them, so the item tuples are kept here."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, str, int]] | None = None
        self.generators: list[protocol.GeneratorInfo] = []
        self.error = ""
        self._asked: list[str] | None = None  # the pipeline command the lists came from

    def load(self, context) -> None:
        prefs = preferences.get(context)
        self._asked, self.error, found = _pipeline(context), "", []
        try:
            base = prefs.base_command()
            found = protocol.parse_presets(run_quick(protocol.presets_command(base)))
            self.generators = protocol.parse_generators(run_quick(protocol.generators_command(base)))
        except (PipelineError, ValueError) as exc:
            self.error = str(exc)
        default = (f"{prefs.default_preset}, from the add-on's preferences" if prefs.default_preset
                   else "The image's sidecar's preset, else the pipeline's default")
        # Numbers from the name keep a scene's choice stable when the list changes (enums are stored as numbers).
        self.items = [(DEFAULT_PRESET, "Default", default, 0)] + [
            (p.name, p.name, f"{p.description} ({p.motion}, {p.frames} frames)", _enum_number(p.name))
            for p in found]

    def _current(self, context) -> None:
        if self.items is None or self._asked != _pipeline(context):  # the preferences name another pipeline
            self.load(context)

    def preset_items(self, context) -> list[tuple[str, str, str, int]]:
        self._current(context)
        return self.items

    def generator_names(self, context) -> list[tuple[str, str]]:
        self._current(context)
        return [(g.name, f"{g.summary}{' (needs a GPU)' if g.needs_gpu else ''}") for g in self.generators]


def _pipeline(context) -> list[str] | None:
    try:
        return preferences.get(context).base_command()
    except ValueError:
        return None


def _enum_number(name: str) -> int:
    return zlib.crc32(name.encode("utf-8")) & 0x7FFFFFFF or 1  # 0 belongs to DEFAULT


CATALOGUE = Catalogue()


def _preset_items(self, context):
    return CATALOGUE.preset_items(context)


def _generator_names(self, context, edit_text):
    return [item for item in CATALOGUE.generator_names(context) if edit_text in item[0]]


class LyraAssetsSettings(bpy.types.PropertyGroup):
    image_source: bpy.props.EnumProperty(
        name="Concept image",
        items=[('FILE', "File", "An image file on disk"),
               ('IMAGE', "Image", "An image open in Blender (saved to a temporary PNG if it has no file)")],
        default='FILE')
    image_path: bpy.props.StringProperty(name="Image file", subtype='FILE_PATH',
                                         description="The concept image the level is generated from")
    image: bpy.props.PointerProperty(name="Image", type=bpy.types.Image,
                                     description="An image from the Image Editor to generate the level from")
    preset: bpy.props.EnumProperty(name="Preset", items=_preset_items,
                                   description="The walkthrough the generator's camera takes through the image")
    generator: bpy.props.StringProperty(name="Generator", search=_generator_names,
                                        description="Image-to-world generator; empty: the default from the "
                                                    "add-on's preferences, else the sidecar's or layout")
    lod_count: bpy.props.IntProperty(name="LODs", min=0, max=8, default=0,
                                     description="Levels of detail to build, LOD0 included; 0: the pipeline's "
                                                 "default")
    frames: bpy.props.IntProperty(name="Frames", min=0, default=0,
                                  description="Walkthrough frames; 0: the preset's")
    lod0_triangles: bpy.props.IntProperty(name="LOD0 triangles", min=0, default=0,
                                          description="Triangle budget of LOD0; 0: the pipeline's default")
    texture_size: bpy.props.IntProperty(name="Texture size", min=0, default=0, subtype='PIXEL',
                                        description="Texture size of LOD0 in texels; 0: the pipeline's default")
    use_camera_path: bpy.props.BoolProperty(
        name="Walk the active camera's animation",
        description="Use the scene camera's animation over the frame range as the walkthrough path instead of "
                    "the preset's motion (render resolution and lens included)")
    force: bpy.props.BoolProperty(name="Replace existing",
                                  description="Rebuild even if this image has been built into the output "
                                              "folder before, replacing what is there")
