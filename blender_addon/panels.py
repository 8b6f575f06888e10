"""The sidebar tab in the 3D viewport: the job's settings, Generate/Cancel with a progress bar, and the LOD
switch of the selected asset."""
from __future__ import annotations

import textwrap

import bpy

from . import importer
from .operators import STATE
from .properties import CATALOGUE


class LyraAssetsPanel:
    bl_space_type = 'VIEW_3D'
    bl_region_type = 'UI'
    bl_category = "Lyra"


class VIEW3D_PT_lyra_assets(LyraAssetsPanel, bpy.types.Panel):
    bl_label = "Lyra Assets"

    def draw(self, context):
        settings = context.scene.lyra_assets
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False

        col = layout.column()
        col.enabled = not STATE.running
        col.row().prop(settings, "image_source", expand=True)
        if settings.image_source == 'FILE':
            col.prop(settings, "image_path", text="Image")
        else:
            col.template_ID(settings, "image", open="image.open")
        row = col.row(align=True)
        row.prop(settings, "preset")
        row.operator("lyra_assets.refresh_presets", text="", icon='FILE_REFRESH')
        if CATALOGUE.error:
            _wrapped(col.box(), CATALOGUE.error, context, icon='ERROR')
        col.prop(settings, "generator")
        col.prop(settings, "lod_count")
        camera_row = col.row()
        camera_row.active = context.scene.camera is not None
        camera_row.prop(settings, "use_camera_path", text="Camera path")

        if STATE.running:
            layout.progress(factor=STATE.progress.fraction, type='BAR', text=STATE.progress.text)
            layout.operator("lyra_assets.cancel", icon='CANCEL')
        else:
            layout.operator("lyra_assets.generate", icon='PLAY')
        if STATE.error:
            _wrapped(layout.box(), STATE.error, context, icon='ERROR')


class VIEW3D_PT_lyra_assets_options(LyraAssetsPanel, bpy.types.Panel):
    bl_label = "Options"
    bl_parent_id = "VIEW3D_PT_lyra_assets"
    bl_options = {'DEFAULT_CLOSED'}

    def draw(self, context):
        settings = context.scene.lyra_assets
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        layout.enabled = not STATE.running
        layout.prop(settings, "frames")
        layout.prop(settings, "lod0_triangles")
        layout.prop(settings, "texture_size")
        layout.prop(settings, "force")


class VIEW3D_PT_lyra_assets_lods(LyraAssetsPanel, bpy.types.Panel):
    bl_label = "Levels of Detail"
    bl_parent_id = "VIEW3D_PT_lyra_assets"

    @classmethod
    def poll(cls, context):
        return importer.asset_root(context.active_object) is not None

    def draw(self, context):
        root = importer.asset_root(context.active_object)
        layout = self.layout
        layout.label(text=root.name, icon='OUTLINER_OB_EMPTY')
        shown = root.get(importer.SHOWN_PROPERTY, 0)
        row = layout.row(align=True)
        for lod in importer.lod_objects(root):
            level = lod["lod"]
            op = row.operator("lyra_assets.show_lod", text=f"LOD{level}", depress=level == shown)
            op.level = level
        coverage = root.get(importer.COVERAGE_PROPERTY, [])
        if shown < len(coverage):
            layout.label(text=f"Shown while the asset covers ≥ {coverage[shown]:.1%} of the screen")
        for collider in (obj for obj in root.children if obj.get("collider")):
            layout.prop(collider, "hide_viewport", text="Show collider", invert_checkbox=True)


def _wrapped(layout, text: str, context, icon: str) -> None:
    """A message over several lines: the sidebar is narrow and the pipeline's messages are sentences."""
    width = max(20, int(context.region.width / 7))  # about 7 px per character in Blender's UI font
    for i, line in enumerate(textwrap.wrap(text, width) or [""]):
        layout.label(text=line, icon=icon if i == 0 else 'BLANK1')


classes = (VIEW3D_PT_lyra_assets, VIEW3D_PT_lyra_assets_options, VIEW3D_PT_lyra_assets_lods)
