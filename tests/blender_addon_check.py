"""Install the add-on's zip into a Blender and drive it the way a script would; write what happened as JSON.

Run with the Python that has Blender as a module (PyPI bpy), with BLENDER_USER_RESOURCES and
BLENDER_USER_CONFIG pointing at temporary folders so nothing touches the real user's Blender:
    .venv-blender/bin/python tests/blender_addon_check.py SPEC.json RESULT.json
SPEC names the zip, how to run the pipeline, the images and the camera animation (see
test_blender_addon.py). Each part records its own outcome, so one failure does not hide the others.
"""
import json
import math
import os
import sys
import traceback

import bpy
from mathutils import Vector

PACKAGE = "bl_ext.user_default.lyra_assets"


def install(spec):
    result = bpy.ops.extensions.package_install_files(filepath=spec["zip"], repo="user_default",
                                                      enable_on_install=True)
    enabled = PACKAGE in bpy.context.preferences.addons
    return {"result": sorted(result), "enabled": enabled, "blender": bpy.app.version_string,
            "operators": [hasattr(bpy.ops.lyra_assets, name) for name in ("generate", "cancel", "show_lod")],
            "panel_registered": hasattr(bpy.types, "VIEW3D_PT_lyra_assets")}


def addon(module):
    return sys.modules[f"{PACKAGE}.{module}"]


def preferences():
    return bpy.context.preferences.addons[PACKAGE].preferences


def camera_path(spec, folder):
    """Animate a camera from the spec's keys and export it as the add-on does for a job."""
    scene = bpy.context.scene
    cam = spec["camera"]
    data = bpy.data.cameras.new("walk")
    data.sensor_fit, data.sensor_width, data.sensor_height = cam["sensor_fit"], *cam["sensor_mm"]
    camera = bpy.data.objects.new("walk", data)
    scene.collection.objects.link(camera)
    scene.camera = camera
    scene.render.resolution_x, scene.render.resolution_y = cam["resolution"]
    scene.render.resolution_percentage = cam["percentage"]
    for key in cam["keys"]:
        camera.location = key["location"]
        camera.rotation_euler = [math.radians(a) for a in key["rotation_deg"]]
        data.lens = key["lens_mm"]
        camera.keyframe_insert("location", frame=key["frame"])
        camera.keyframe_insert("rotation_euler", frame=key["frame"])
        data.keyframe_insert("lens", frame=key["frame"])
    scene.frame_start, scene.frame_end = cam["keys"][0]["frame"], cam["keys"][-1]["frame"]
    scene.frame_set(scene.frame_start)
    path = os.path.join(folder, "camera_path.npz")
    addon("jobs").export_camera_path(bpy.context, path)
    return {"npz": path}


def image_copies(spec, folder):
    """An image made in Blender (no file) is saved to a PNG named after it; one loaded from a file is used as is."""
    settings = bpy.context.scene.lyra_assets
    settings.image_source = 'IMAGE'
    made = bpy.data.images.new("Painted concept.png", 64, 32)
    made.generated_color = (0.8, 0.3, 0.1, 1.0)
    settings.image = made
    made_path = addon("jobs").concept_image_file(settings, folder)
    loaded = bpy.data.images.load(spec["image"])
    settings.image = loaded
    loaded_path = addon("jobs").concept_image_file(settings, folder)
    return {"made": made_path, "made_filepath_after": made.filepath, "loaded": loaded_path}


def failing_job(spec):
    """A job on a file that is no image, run through the Python-interpreter way of starting the pipeline."""
    prefs = preferences()
    prefs.runner, prefs.python, prefs.output_dir = 'PYTHON', spec["python"], spec["out_dir"]
    settings = bpy.context.scene.lyra_assets
    settings.image_source, settings.image_path, settings.use_camera_path = 'FILE', spec["bad_image"], False
    try:
        result = bpy.ops.lyra_assets.generate('INVOKE_DEFAULT')
        raised = None
    except RuntimeError as exc:  # bpy.ops raises the operator's ERROR report
        result, raised = None, str(exc)
    state = addon("operators").STATE
    return {"result": sorted(result) if result else None, "raised": raised, "panel_error": state.error,
            "running": state.running}


def build_job(spec):
    """The whole job on the small example, through the lyra-assets executable, imported into the scene."""
    prefs = preferences()
    prefs.runner, prefs.executable, prefs.output_dir = 'EXECUTABLE', spec["executable"], spec["out_dir"]
    settings = bpy.context.scene.lyra_assets
    settings.image_source, settings.image_path = 'FILE', spec["image"]
    settings.preset, settings.generator = "walk_forward", "layout"  # an enum: only a listed preset is taken
    catalogue = addon("properties").CATALOGUE
    presets = [item[0] for item in catalogue.preset_items(bpy.context)]
    generators = [name for name, _ in catalogue.generator_names(bpy.context)]
    settings.lod0_triangles, settings.texture_size = spec["lod0_triangles"], spec["texture_size"]
    settings.use_camera_path = False
    before = set(bpy.data.objects)
    result = bpy.ops.lyra_assets.generate('INVOKE_DEFAULT')
    objects = [obj for obj in bpy.data.objects if obj not in before]
    root = bpy.context.view_layer.objects.active
    summary = {"result": sorted(result), "presets": presets, "generators": generators, "preset": settings.preset,
               "panel_error": addon("operators").STATE.error, "root": describe(root) if root else None,
               "objects": [describe(obj) for obj in objects],
               "images": [{"name": image.name, "packed": image.packed_file is not None,
                           "file_found": bool(image.filepath) and os.path.isfile(bpy.path.abspath(image.filepath)),
                           "size": list(image.size)} for image in bpy.data.images if image.users]}
    if root is not None:
        bpy.context.view_layer.objects.active = next(obj for obj in objects if obj.get("lod") == 0)
        switched = bpy.ops.lyra_assets.show_lod(level=1)  # from a LOD object: it finds the asset's root
        summary["after_show_lod1"] = {"result": sorted(switched), "root_lod_shown": root.get("lod_shown"),
                                      "objects": [describe(obj) for obj in objects]}
    return summary


def extend_job(spec):
    """Extend the level build_job imported, from a camera animated inside it (Extend from Camera, as a script
    runs it: execute to the end); then its points are shown and its collection replaced by the rebuilt one."""
    scene = bpy.context.scene
    old_root = bpy.data.objects["corridor"]
    old = {"uid": old_root.session_uid, "objects": len(old_root.users_collection[0].all_objects)}
    bpy.context.view_layer.objects.active = old_root
    explore = spec["explore"]
    data = bpy.data.cameras.new("explore")
    data.sensor_fit, data.sensor_width, data.lens = 'AUTO', 36.0, explore["lens_mm"]
    camera = bpy.data.objects.new("explore", data)
    scene.collection.objects.link(camera)
    scene.camera = camera
    scene.render.resolution_x, scene.render.resolution_y = explore["resolution"]
    scene.render.resolution_percentage = 100
    for key in explore["keys"]:
        camera.location = key["location"]
        camera.rotation_euler = [math.radians(90.0), 0.0, math.radians(key["yaw"])]
        camera.keyframe_insert("location", frame=key["frame"])
        camera.keyframe_insert("rotation_euler", frame=key["frame"])
    scene.frame_start, scene.frame_end = explore["keys"][0]["frame"], explore["keys"][-1]["frame"]
    settings = scene.lyra_assets
    settings.use_camera_path, settings.extend_preset, settings.frames = False, "look_around", 5
    by_preset = addon("jobs").extend_request(bpy.context, old_root, spec["work_dir"])  # what the preset mode asks
    settings.use_camera_path, settings.frames, settings.max_points = True, 0, explore["max_points"]
    result = bpy.ops.lyra_assets.extend('INVOKE_DEFAULT')
    root = bpy.context.view_layer.objects.active
    points = bpy.data.objects.get("corridor_points")
    cameras = bpy.data.objects.get("corridor_cameras")
    return {"result": sorted(result), "panel_error": addon("operators").STATE.error,
            "by_preset": [by_preset.folder, by_preset.preset, by_preset.trajectory, by_preset.frames], "old": old,
            "old_root_left": any(obj.session_uid == old["uid"] for obj in bpy.data.objects),
            "root": describe(root), "new_uid": root.session_uid,
            "level_collections": [c.name for c in scene.collection.children if c.name.startswith("corridor")],
            "collection_objects": sorted(obj.name for obj in root.users_collection[0].all_objects),
            "points": None if points is None else {
                "vertices": len(points.data.vertices), "properties": {k: plain(points[k]) for k in points.keys()},
                "collections": [c.name for c in points.users_collection],
                "colour": list(points.data.color_attributes["Col"].data[0].color_srgb),
                "modifiers": [m.type for m in points.modifiers],
                "bounds": [[min(v.co[i] for v in points.data.vertices) for i in range(3)],
                           [max(v.co[i] for v in points.data.vertices) for i in range(3)]]},
            "cameras": None if cameras is None else {"vertices": len(cameras.data.vertices),
                                                     "edges": len(cameras.data.edges)},
            "lod0_bounds": next(describe(obj)["bounds"] for obj in root.children if obj.get("lod") == 0)}


def describe(obj):
    entry = {"name": obj.name, "type": obj.type, "parent": obj.parent.name if obj.parent else None,
             "collections": [c.name for c in obj.users_collection], "hide_viewport": obj.hide_viewport,
             "hide_render": obj.hide_render, "display_type": obj.display_type,
             "properties": {key: plain(obj[key]) for key in obj.keys()}}
    if obj.type == 'MESH':
        corners = [obj.matrix_world @ Vector(corner) for corner in obj.bound_box]
        entry["bounds"] = [[min(c[i] for c in corners) for i in range(3)],
                           [max(c[i] for c in corners) for i in range(3)]]
        materials = [slot.material for slot in obj.material_slots if slot.material and slot.material.node_tree]
        entry["textures"] = sorted(node.image.name for material in materials for node in material.node_tree.nodes
                                   if node.type == 'TEX_IMAGE' and node.image)
    return entry


def plain(value):
    if hasattr(value, "to_list"):
        return value.to_list()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return value if isinstance(value, (str, int, float, bool)) else str(value)


def main(spec_path, result_path):
    with open(spec_path) as f:
        spec = json.load(f)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    results = {}
    parts = [("install", lambda: install(spec)),
             ("camera_path", lambda: camera_path(spec, spec["work_dir"])),
             ("image_copies", lambda: image_copies(spec, spec["work_dir"])),
             ("failing_job", lambda: failing_job(spec)),
             ("build_job", lambda: build_job(spec)),
             ("extend_job", lambda: extend_job(spec))]
    for name, part in parts:
        try:
            results[name] = part()
        except Exception:
            results[name] = {"exception": traceback.format_exc()}
        if name == "install" and not results[name].get("enabled"):
            break  # nothing else can run without the add-on
    with open(result_path, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: blender_addon_check.py SPEC.json RESULT.json")
    main(sys.argv[1], sys.argv[2])
