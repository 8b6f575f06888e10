"""The walkthrough in the viewport: its points (coloured by the frames) and camera frustums, in the level's
collection; and replacing a level's collection by its rebuilt asset after an extension."""
from __future__ import annotations

import numpy as np

import bpy

from . import importer, pointcloud

POINTS_SUFFIX = "_points"
CAMERAS_SUFFIX = "_cameras"
COLOUR_ATTRIBUTE = "Col"


def show_walkthrough(context, walkthrough_dir: str, collection, name: str, max_points: int,
                     with_cameras: bool = True):
    """Put the walkthrough's points (and frustums) into collection, replacing ones shown before; returns the
    points object, whose custom properties say how many points it holds out of how many."""
    for suffix in (POINTS_SUFFIX, CAMERAS_SUFFIX):
        old = bpy.data.objects.get(name + suffix)
        if old is not None:
            _remove_object(old)
    points = pointcloud.walkthrough_points(walkthrough_dir, max_points)
    mesh = bpy.data.meshes.new(name + POINTS_SUFFIX)
    mesh.vertices.add(len(points.positions))
    mesh.vertices.foreach_set("co", points.positions.reshape(-1))
    colour = mesh.color_attributes.new(COLOUR_ATTRIBUTE, 'BYTE_COLOR', 'POINT')
    colour.data.foreach_set("color_srgb", _colours(walkthrough_dir, points).reshape(-1))
    mesh.color_attributes.active_color = colour  # what the viewport's Attribute colour shows
    obj = bpy.data.objects.new(name + POINTS_SUFFIX, mesh)
    collection.objects.link(obj)
    _draw_as_points(obj)
    obj["points_shown"] = len(points.positions)
    obj["points_total"] = points.total
    obj["walkthrough"] = walkthrough_dir
    if with_cameras:
        vertices, edges = pointcloud.frustums(walkthrough_dir)
        frames = bpy.data.meshes.new(name + CAMERAS_SUFFIX)
        frames.from_pydata(vertices.tolist(), edges, [])
        collection.objects.link(bpy.data.objects.new(name + CAMERAS_SUFFIX, frames))
    return obj


def replace_level(context, old_root, glb_path: str):
    """Remove the level old_root heads (its collection and what is in it), then import glb_path in its place;
    returns the new root."""
    levels = [c for c in old_root.users_collection if c.name in context.scene.collection.children]
    _remove_object(old_root)
    for collection in levels:
        for obj in list(collection.all_objects):
            _remove_object(obj)
        bpy.data.collections.remove(collection)
    return importer.import_asset(context, glb_path)


def _colours(walkthrough_dir: str, points: pointcloud.Points) -> np.ndarray:
    """(M, 4) sRGB RGBA of each point's pixel, read through Blender's own image loader."""
    colours = np.ones((len(points.positions), 4), np.float32)
    for index in np.unique(points.frame):
        image = bpy.data.images.load(pointcloud.frame_file(walkthrough_dir, int(index)), check_existing=False)
        try:
            width, height = image.size
            pixels = np.empty(width * height * 4, np.float32)
            image.pixels.foreach_get(pixels)  # an 8-bit file's values as stored, rows bottom up
        finally:
            bpy.data.images.remove(image)
        pixels = pixels.reshape(height, width, 4)
        mine = points.frame == index
        rows, cols = points.pixel[mine, 0], points.pixel[mine, 1]
        colours[mine] = pixels[height - 1 - rows, cols]
    return colours


def _draw_as_points(obj) -> None:
    """A mesh of loose vertices draws nothing in Object Mode: a Mesh to Points modifier shows them, with an
    unlit material of their colour (in Material Preview and renders)."""
    material = bpy.data.materials.new(obj.name)
    material.use_nodes = True
    tree = material.node_tree
    tree.nodes.clear()
    attribute, emission, output = (tree.nodes.new('ShaderNodeAttribute'), tree.nodes.new('ShaderNodeEmission'),
                                   tree.nodes.new('ShaderNodeOutputMaterial'))
    attribute.attribute_name = COLOUR_ATTRIBUTE
    tree.links.new(attribute.outputs['Color'], emission.inputs['Color'])  # the frames' own colours
    tree.links.new(emission.outputs['Emission'], output.inputs['Surface'])
    obj.data.materials.append(material)

    group = bpy.data.node_groups.new(obj.name, 'GeometryNodeTree')
    group.interface.new_socket("Geometry", in_out='INPUT', socket_type='NodeSocketGeometry')
    group.interface.new_socket("Geometry", in_out='OUTPUT', socket_type='NodeSocketGeometry')
    nodes = group.nodes
    given, result = nodes.new('NodeGroupInput'), nodes.new('NodeGroupOutput')
    to_points, coloured = nodes.new('GeometryNodeMeshToPoints'), nodes.new('GeometryNodeSetMaterial')
    to_points.inputs['Radius'].default_value = 0.01
    coloured.inputs['Material'].default_value = material  # points made by nodes carry no material of their own
    group.links.new(given.outputs[0], to_points.inputs['Mesh'])
    group.links.new(to_points.outputs['Points'], coloured.inputs['Geometry'])
    group.links.new(coloured.outputs['Geometry'], result.inputs[0])
    obj.modifiers.new("Points", 'NODES').node_group = group


def _remove_object(obj) -> None:
    data = obj.data
    for modifier in obj.modifiers:
        if modifier.type == 'NODES' and modifier.node_group is not None and modifier.node_group.users == 1:
            bpy.data.node_groups.remove(modifier.node_group)
    bpy.data.objects.remove(obj, do_unlink=True)
    if data is not None and data.users == 0 and isinstance(data, bpy.types.Mesh):
        bpy.data.meshes.remove(data)
