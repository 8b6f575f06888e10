"""Import a .glb (Blender's own glTF importer) or a .usdz/.usdc (its USD importer) and print what Blender
made of it, as one JSON line.

Run with the Python that has Blender as a module (PyPI bpy), not the project's:
    .venv-blender/bin/python tests/blender_import.py FILE.glb
    .venv-blender/bin/python tests/blender_import.py FILE.usdz [--guides]   # --guides: purpose-guide prims too
Blender prints its own log lines on stdout too; the summary is the last line.
"""
import json
import sys

import bpy
from mathutils import Vector


def plain(value):
    """Custom-property values (ID property groups and arrays) as JSON values."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "to_list"):
        return value.to_list()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def properties(owner):
    return {key: plain(owner[key]) for key in owner.keys()}


def world_bounds(obj):
    corners = [obj.matrix_world @ Vector(corner) for corner in obj.bound_box]
    return [[min(c[i] for c in corners) for i in range(3)], [max(c[i] for c in corners) for i in range(3)]]


def image_summary(image):
    width, height = image.size  # reading the size loads the pixels: zero when Blender cannot find them
    return {"name": image.name, "packed": image.packed_file is not None, "width": width, "height": height,
            "colorspace": image.colorspace_settings.name}


def material_summary(material):
    nodes = material.node_tree.nodes if material.node_tree else []
    images = [node.image.name for node in nodes if node.type == "TEX_IMAGE" and node.image]
    return {"name": material.name, "images": sorted(images)}


def main(path, guides=False):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    if path.endswith((".usdz", ".usdc", ".usda", ".usd")):
        result = bpy.ops.wm.usd_import(filepath=path, import_guide=guides)
    else:
        result = bpy.ops.import_scene.gltf(filepath=path)
    objects = []
    for obj in sorted(bpy.context.scene.objects, key=lambda o: o.name):
        entry = {"name": obj.name, "type": obj.type, "parent": obj.parent.name if obj.parent else None,
                 "custom_properties": properties(obj), "collections": [c.name for c in obj.users_collection],
                 "visible": obj.visible_get()}
        if obj.type == "MESH":
            entry.update(bounds=world_bounds(obj), vertices=len(obj.data.vertices),
                         triangles=sum(len(p.vertices) - 2 for p in obj.data.polygons),
                         materials=[slot.material.name for slot in obj.material_slots if slot.material])
        objects.append(entry)
    summary = {
        "result": sorted(result),
        "blender": bpy.app.version_string,
        "up_axis": "Z",
        "objects": objects,
        "materials": [material_summary(m) for m in bpy.data.materials],
        "images": [image_summary(i) for i in bpy.data.images],
        "scene_custom_properties": properties(bpy.context.scene),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or sys.argv[2:] not in ([], ["--guides"]):
        sys.exit("usage: blender_import.py FILE.glb|FILE.usdz [--guides]")
    main(sys.argv[1], guides=sys.argv[2:] == ["--guides"])
