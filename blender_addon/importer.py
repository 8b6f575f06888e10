"""A built .glb into the scene: its own collection, the LODs under one Empty, one LOD shown at a time.

The file's layout (lyra_assets/export/gltf.py): a root node <name> with child <name>_LOD0; LOD1..n are
reached through LOD0's MSFT_lod and sit in a second glTF scene, which Blender's importer brings in as loose
objects in a collection of their own; the collider is a mesh no node uses, named by the root's
OMI_physics_body / OMI_physics_shape, which Blender's importer skips, so it is read from the file here.
Blender's importer turns node extras into custom properties, so the LODs are found by their `lod` number
rather than by names, which Blender suffixes (.001) when the asset is imported twice.
"""
from __future__ import annotations

import json
import os
import struct

import bpy
import numpy as np

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
    before_collections = set(bpy.data.collections)
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
    for leftover in set(bpy.data.collections) - before_collections - {collection}:
        if not leftover.all_objects:  # the importer's collection for the file's second scene, now empty
            bpy.data.collections.remove(leftover)

    tops = [obj for obj in new if obj.parent is None]
    root = _root_empty(collection, name, [obj for obj in tops if not _is_level(obj.get("lod"))])
    for obj in tops:
        if _is_level(obj.get("lod")):
            obj.parent = root  # root sits at the origin, so the levels keep their place
    lods = lod_objects(root)
    if not lods:
        raise ImportFailed(f"{glb_path} has no {name}_LOD0..n nodes with a `lod` number in their extras")
    root[SOURCE_PROPERTY] = glb_path
    root[COVERAGE_PROPERTY] = [float(lod.get("screen_coverage", 0.0)) for lod in lods]
    colliders = [obj for obj in root.children if obj.get("collider")]
    if not colliders:
        colliders = [_omi_collider(glb_path, collection, root)]
    for collider in colliders:
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


def _omi_collider(glb_path: str, collection, root):
    """The collider mesh the root's OMI_physics_body names, as an object under the root."""
    with open(glb_path, "rb") as f:
        data = f.read()
    (json_length,) = struct.unpack_from("<I", data, 12)
    document = json.loads(data[20:20 + json_length])
    binary = data[28 + json_length:]
    shapes = document.get("extensions", {}).get("OMI_physics_shape", {}).get("shapes", [])
    if not shapes:
        raise ImportFailed(f"{glb_path} has no collider (no OMI_physics_shape)")
    mesh = document["meshes"][shapes[0]["trimesh"]["mesh"]]
    primitive = mesh["primitives"][0]
    positions = _accessor(document, binary, primitive["attributes"]["POSITION"]).reshape(-1, 3)
    faces = _accessor(document, binary, primitive["indices"]).reshape(-1, 3)
    data_block = bpy.data.meshes.new(mesh.get("name", "collider"))
    # glTF is Y up, Blender Z up: (x, y, z) -> (x, -z, y), as Blender's glTF importer turns it.
    data_block.from_pydata(positions[:, [0, 2, 1]] * (1.0, -1.0, 1.0), [], faces.tolist())
    data_block.update()
    obj = bpy.data.objects.new(mesh.get("name", "collider"), data_block)
    obj["collider"] = True
    collection.objects.link(obj)
    obj.parent = root
    return obj


def _accessor(document: dict, binary: bytes, index: int) -> np.ndarray:
    """An accessor's values, tightly packed as lyra-assets writes them (the default profile)."""
    accessor = document["accessors"][index]
    view = document["bufferViews"][accessor["bufferView"]]
    dtype = {5126: np.float32, 5125: np.uint32, 5123: np.uint16}[accessor["componentType"]]
    width = {"SCALAR": 1, "VEC3": 3}[accessor["type"]]
    start = view.get("byteOffset", 0) + accessor.get("byteOffset", 0)
    return np.frombuffer(binary, dtype, accessor["count"] * width, start).astype(np.float64 if dtype is np.float32
                                                                                  else np.int64)


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
