"""A built .glb into the scene: its own collection, the LODs under one Empty, one LOD shown at a time.

The file's layout (lyra_assets/export/gltf.py): a root node <name> with children <name>_LOD0..n and
<name>_collider. Blender's importer turns node extras into custom properties, so the LODs are found by their
`lod` number and the collider by its `collider` flag rather than by names, which Blender suffixes (.001)
when the asset is imported twice.
"""
from __future__ import annotations

import os

import bpy

# Custom properties on the asset's root Empty.
COVERAGE_PROPERTY = "lod_screen_coverage"  # per LOD: shown while the asset covers this much of the screen
SHOWN_PROPERTY = "lod_shown"
SOURCE_PROPERTY = "lyra_assets_glb"


class ImportFailed(Exception):
    pass


def import_asset(context, glb_path: str):
    """Import glb_path and arrange it; returns the asset's root Empty."""
    name = os.path.splitext(os.path.basename(glb_path))[0]
    before = set(bpy.data.objects)
    try:
        result = bpy.ops.import_scene.gltf(filepath=glb_path)
    except RuntimeError as exc:  # the importer's own error report
        raise ImportFailed(f"Blender's glTF importer could not read {glb_path}: {exc}") from exc
    if 'FINISHED' not in result:
        raise ImportFailed(f"Blender's glTF importer could not read {glb_path}")
    new = [obj for obj in bpy.data.objects if obj not in before]
    if not new:
        raise ImportFailed(f"{glb_path} holds no objects")

    collection = bpy.data.collections.new(name)
    context.scene.collection.children.link(collection)
    for obj in new:
        for owner in list(obj.users_collection):
            owner.objects.unlink(obj)
        collection.objects.link(obj)

    root = _root_empty(collection, name, [obj for obj in new if obj.parent is None])
    lods = lod_objects(root)
    if not lods:
        raise ImportFailed(f"{glb_path} has no {name}_LOD0..n nodes with a `lod` number in their extras")
    root[SOURCE_PROPERTY] = glb_path
    root[COVERAGE_PROPERTY] = [float(lod.get("screen_coverage", 0.0)) for lod in lods]
    for collider in (obj for obj in root.children if obj.get("collider")):
        collider.display_type = 'WIRE'
        collider.hide_render = True
    show_lod(root, 0)

    for obj in context.view_layer.objects:
        obj.select_set(False)
    root.select_set(True)
    context.view_layer.objects.active = root
    return root


def _root_empty(collection, name: str, tops: list):
    """The file's root node is an Empty already; anything else gets one made for it."""
    if len(tops) == 1 and tops[0].type == 'EMPTY':
        return tops[0]
    root = bpy.data.objects.new(name, None)
    collection.objects.link(root)
    for obj in tops:
        obj.parent = root  # root sits at the origin, so the objects keep their place
    return root


def lod_objects(root) -> list:
    """The root's LOD meshes, LOD0 first."""
    levels = [obj for obj in root.children if obj.type == 'MESH' and _is_level(obj.get("lod"))]
    return sorted(levels, key=lambda obj: obj["lod"])


def _is_level(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def show_lod(root, level: int) -> None:
    """Show one LOD, in the viewport and in renders, and hide the others."""
    for lod in lod_objects(root):
        hidden = lod["lod"] != level
        lod.hide_viewport = hidden
        lod.hide_render = hidden
    root[SHOWN_PROPERTY] = level


def asset_root(obj):
    """The imported asset obj belongs to (its root Empty), or None."""
    while obj is not None:
        if COVERAGE_PROPERTY in obj:
            return obj
        obj = obj.parent
    return None
