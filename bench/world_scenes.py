"""Ground-truth scenes for bench_world.py, built and rendered by Blender (run with a Python that has `bpy`).

    .venv-blender/bin/python bench/world_scenes.py --scene plaza --out DIR [--poses poses.npz] \
        [--width 256 --height 144 --hfov 60 --samples 8 --threads 2]

Every scene is made of primitives by seeded code (no .blend files): procedural materials (bricks, tiles,
noise, Voronoi stone) under a gradient sky and a sun, in metres, Blender's Z up. Camera 0 stands at eye height
(1.6 m) unless the scene is aerial. The script writes to DIR:

    camera0.json     camera 0's pose in Blender's world and the scene's description
    mesh.npz         the true mesh: vertices (V,3) float64 metres and faces (F,3), in OUR world frame
                     (OpenCV axes, world = camera 0: x right, y down, z forward)
    frames/NNNN.png  with --poses: Cycles colour renders, one per camera-to-world pose (OpenCV, our world)
    depth.npz        with --poses: depth (N,H,W) float32, metres along each camera's z axis at pixel centres
                     (exact ray casts against the true mesh with Blender's BVH tree; inf where only sky)

Our camera frame is Blender's camera frame with y and z flipped (Blender cameras look down -Z with +Y up).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix, Vector
from mathutils.bvhtree import BVHTree

FLIP = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenCV camera axes <-> Blender camera axes


# -- materials -------------------------------------------------------------------------------------------


def _material(name: str, kind: str, a: tuple, b: tuple, scale: float = 1.0) -> bpy.types.Material:
    """A Principled BSDF whose colour is a procedural texture of world position (no UVs needed)."""
    mat = bpy.data.materials.new(name)
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    bsdf = nodes.get("Principled BSDF")
    bsdf.inputs["Roughness"].default_value = 0.8
    pos = nodes.new("ShaderNodeNewGeometry").outputs["Position"]
    if kind == "brick":  # rows along z on any vertical wall: the texture's (u, v) = (x + y, z)
        sep = nodes.new("ShaderNodeSeparateXYZ")
        links.new(pos, sep.inputs[0])
        add = nodes.new("ShaderNodeMath")
        links.new(sep.outputs["X"], add.inputs[0])
        links.new(sep.outputs["Y"], add.inputs[1])
        comb = nodes.new("ShaderNodeCombineXYZ")
        links.new(add.outputs[0], comb.inputs["X"])
        links.new(sep.outputs["Z"], comb.inputs["Y"])
        tex = nodes.new("ShaderNodeTexBrick")
        links.new(comb.outputs[0], tex.inputs["Vector"])
        tex.inputs["Color1"].default_value = (*a, 1)
        tex.inputs["Color2"].default_value = (*[0.8 * c for c in a], 1)
        tex.inputs["Mortar"].default_value = (*b, 1)
        tex.inputs["Scale"].default_value = scale
        links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
        return mat
    if kind == "tiles":
        tex = nodes.new("ShaderNodeTexChecker")
        tex.inputs["Scale"].default_value = scale
        tex.inputs["Color1"].default_value = (*a, 1)
        tex.inputs["Color2"].default_value = (*b, 1)
        links.new(pos, tex.inputs["Vector"])
        links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
        return mat
    tex = nodes.new("ShaderNodeTexNoise" if kind == "noise" else "ShaderNodeTexVoronoi")
    tex.inputs["Scale"].default_value = scale
    links.new(pos, tex.inputs["Vector"])
    ramp = nodes.new("ShaderNodeValToRGB")
    ramp.color_ramp.elements[0].color = (*a, 1)
    ramp.color_ramp.elements[1].color = (*b, 1)
    links.new(tex.outputs["Factor" if kind == "noise" else "Distance"], ramp.inputs[0])
    links.new(ramp.outputs["Color"], bsdf.inputs["Base Color"])
    return mat


def _sky() -> None:
    world = bpy.data.worlds.new("sky")
    bpy.context.scene.world = world
    nodes, links = world.node_tree.nodes, world.node_tree.links
    coord = nodes.new("ShaderNodeTexCoord")
    sep = nodes.new("ShaderNodeSeparateXYZ")
    links.new(coord.outputs["Generated"], sep.inputs[0])  # a world's Generated output is the view direction
    ramp = nodes.new("ShaderNodeValToRGB")
    ramp.color_ramp.elements[0].position = 0.5
    ramp.color_ramp.elements[0].color = (0.75, 0.85, 0.95, 1)  # horizon
    ramp.color_ramp.elements[1].color = (0.25, 0.45, 0.85, 1)  # zenith
    links.new(sep.outputs["Z"], ramp.inputs[0])
    background = nodes.get("Background")
    background.inputs["Strength"].default_value = 1.0
    links.new(ramp.outputs["Color"], background.inputs["Color"])
    sun = bpy.data.lights.new("sun", "SUN")
    sun.energy = 3.0
    sun_obj = bpy.data.objects.new("sun", sun)
    sun_obj.rotation_euler = (math.radians(40), math.radians(15), math.radians(35))
    bpy.context.scene.collection.objects.link(sun_obj)


# -- geometry (all through from_pydata: no operators, no context) --------------------------------------------


def _add(name: str, verts, faces, mat) -> None:
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata([tuple(map(float, v)) for v in verts], [], [tuple(map(int, f)) for f in faces])
    mesh.validate()
    mesh.materials.append(mat)
    bpy.context.scene.collection.objects.link(bpy.data.objects.new(name, mesh))


def box(name, lo, hi, mat) -> None:
    (x0, y0, z0), (x1, y1, z1) = lo, hi
    v = [(x0, y0, z0), (x1, y0, z0), (x1, y1, z0), (x0, y1, z0), (x0, y0, z1), (x1, y0, z1), (x1, y1, z1),
         (x0, y1, z1)]
    f = [(0, 3, 2, 1), (4, 5, 6, 7), (0, 1, 5, 4), (1, 2, 6, 5), (2, 3, 7, 6), (3, 0, 4, 7)]
    _add(name, v, f, mat)


def cylinder(name, x, y, z0, z1, r0, r1, mat, n=16) -> None:
    """A (truncated) cone; r1 = 0 makes a cone."""
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    v = [(x + r0 * math.cos(t), y + r0 * math.sin(t), z0) for t in a]
    v += [(x + max(r1, 1e-3) * math.cos(t), y + max(r1, 1e-3) * math.sin(t), z1) for t in a]
    f = [(i, (i + 1) % n, n + (i + 1) % n, n + i) for i in range(n)]
    f += [tuple(range(n - 1, -1, -1)), tuple(range(n, 2 * n))]
    _add(name, v, f, mat)


def sphere(name, centre, r, mat, rings=8, segments=16) -> None:
    cx, cy, cz = centre
    v = [(cx, cy, cz - r)]
    for i in range(1, rings):
        phi = -np.pi / 2 + np.pi * i / rings
        for j in range(segments):
            t = 2 * np.pi * j / segments
            ring = r * math.cos(phi)
            v.append((cx + ring * math.cos(t), cy + ring * math.sin(t), cz + r * math.sin(phi)))
    v.append((cx, cy, cz + r))
    top = len(v) - 1
    f = [(0, 1 + (j + 1) % segments, 1 + j) for j in range(segments)]
    for i in range(rings - 2):
        s = 1 + i * segments
        f += [(s + j, s + (j + 1) % segments, s + segments + (j + 1) % segments, s + segments + j)
              for j in range(segments)]
    s = 1 + (rings - 2) * segments
    f += [(s + j, s + (j + 1) % segments, top) for j in range(segments)]
    _add(name, v, f, mat)


def grid(name, x0, x1, y0, y1, n, height, mat) -> None:
    """A height field z = height(x, y) over a rectangle, n x n quads."""
    xs, ys = np.linspace(x0, x1, n + 1), np.linspace(y0, y1, n + 1)
    X, Y = np.meshgrid(xs, ys)
    Z = height(X, Y)
    v = np.stack([X, Y, Z], -1).reshape(-1, 3)
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    f = np.stack([idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]], -1).reshape(-1, 4)
    _add(name, v, f, mat)


def gable_roof(name, lo, hi, ridge, mat) -> None:
    """A prism roof over the box lo..hi (top at hi z), ridge along x, `ridge` metres high."""
    (x0, y0, _), (x1, y1, z) = lo, hi
    ym = (y0 + y1) / 2
    v = [(x0, y0, z), (x1, y0, z), (x1, y1, z), (x0, y1, z), (x0, ym, z + ridge), (x1, ym, z + ridge)]
    f = [(0, 1, 5, 4), (2, 3, 4, 5), (0, 4, 3), (1, 2, 5), (0, 3, 2, 1)]
    _add(name, v, f, mat)


def ceiling_light(name, x, y, z, size, watts) -> None:
    """An area light facing down (interiors get no sun or sky)."""
    light = bpy.data.lights.new(name, "AREA")
    light.size, light.energy = size, watts
    obj = bpy.data.objects.new(name, light)
    obj.location = (x, y, z)
    bpy.context.scene.collection.objects.link(obj)


def tree(name, x, y, rng, mats) -> None:
    h = float(rng.uniform(3.0, 5.0))
    cylinder(f"{name}_trunk", x, y, 0, h * 0.45, 0.18, 0.14, mats["bark"], n=8)
    if rng.uniform() < 0.5:
        cylinder(f"{name}_crown", x, y, h * 0.3, h, 1.3, 0.0, mats["leaves"], n=12)
    else:
        sphere(f"{name}_crown", (x, y, h * 0.7), 1.2, mats["leaves"])


# -- the scenes -----------------------------------------------------------------------------------------------


def _materials(rng) -> dict:
    def jitter(c):
        return tuple(float(np.clip(x + rng.uniform(-0.06, 0.06), 0, 1)) for x in c)

    return {
        "brick": _material("brick", "brick", jitter((0.55, 0.22, 0.15)), (0.75, 0.72, 0.68), 1.6),
        "brick2": _material("brick2", "brick", jitter((0.75, 0.6, 0.4)), (0.9, 0.88, 0.8), 1.4),
        "plaster": _material("plaster", "noise", jitter((0.85, 0.8, 0.7)), jitter((0.65, 0.6, 0.5)), 3.0),
        "tiles": _material("tiles", "tiles", jitter((0.7, 0.7, 0.68)), jitter((0.3, 0.3, 0.32)), 1.0),
        "wood": _material("wood", "noise", jitter((0.45, 0.28, 0.12)), jitter((0.25, 0.14, 0.06)), 6.0),
        "fabric": _material("fabric", "noise", jitter((0.2, 0.3, 0.6)), jitter((0.1, 0.15, 0.35)), 12.0),
        "stone": _material("stone", "voronoi", jitter((0.6, 0.58, 0.55)), jitter((0.35, 0.33, 0.3)), 2.0),
        "grass": _material("grass", "noise", jitter((0.25, 0.5, 0.12)), jitter((0.12, 0.3, 0.06)), 0.8),
        "rock": _material("rock", "voronoi", jitter((0.5, 0.45, 0.4)), jitter((0.3, 0.28, 0.26)), 0.05),
        "snow": _material("snow", "noise", (0.92, 0.93, 0.95), (0.7, 0.72, 0.78), 0.02),
        "asphalt": _material("asphalt", "noise", (0.2, 0.2, 0.21), (0.32, 0.32, 0.33), 4.0),
        "roof": _material("roof", "tiles", jitter((0.6, 0.2, 0.12)), jitter((0.4, 0.12, 0.08)), 2.0),
        "bark": _material("bark", "noise", (0.3, 0.2, 0.12), (0.18, 0.12, 0.07), 8.0),
        "leaves": _material("leaves", "voronoi", jitter((0.2, 0.45, 0.15)), jitter((0.08, 0.25, 0.06)), 3.0),
        "metal": _material("metal", "noise", (0.55, 0.57, 0.6), (0.35, 0.36, 0.4), 5.0),
        "water": _material("water", "noise", (0.2, 0.4, 0.55), (0.1, 0.25, 0.4), 2.0),
    }


def room(rng, m) -> dict:
    w, d, h = 6.0, 8.0, 3.0
    box("floor", (-w / 2, -1, -0.1), (w / 2, d, 0), m["wood"])
    box("ceiling", (-w / 2, -1, h), (w / 2, d, h + 0.1), m["plaster"])
    box("wall_l", (-w / 2 - 0.1, -1, 0), (-w / 2, d, h), m["plaster"])
    box("wall_r", (w / 2, -1, 0), (w / 2 + 0.1, d, h), m["plaster"])
    box("wall_back", (-w / 2, d, 0), (w / 2, d + 0.1, h), m["brick"])
    box("wall_behind", (-w / 2, -1.1, 0), (w / 2, -1, h), m["plaster"])
    tx, ty = float(rng.uniform(-0.6, 0.6)), float(rng.uniform(3.0, 4.0))
    box("table_top", (tx - 0.8, ty - 0.5, 0.72), (tx + 0.8, ty + 0.5, 0.78), m["wood"])
    for i, (dx, dy) in enumerate([(-0.7, -0.4), (0.7, -0.4), (-0.7, 0.4), (0.7, 0.4)]):
        box(f"table_leg{i}", (tx + dx - 0.04, ty + dy - 0.04, 0), (tx + dx + 0.04, ty + dy + 0.04, 0.72), m["wood"])
    for i, dx in enumerate((-0.4, 0.4)):
        cx, cy = tx + dx, ty + 0.9
        box(f"chair{i}_seat", (cx - 0.22, cy - 0.22, 0.42), (cx + 0.22, cy + 0.22, 0.46), m["wood"])
        box(f"chair{i}_back", (cx - 0.22, cy + 0.18, 0.46), (cx + 0.22, cy + 0.22, 0.95), m["wood"])
        box(f"chair{i}_legs", (cx - 0.2, cy - 0.2, 0), (cx + 0.2, cy + 0.2, 0.42), m["metal"])
    box("sofa_base", (-w / 2 + 0.1, 1.5, 0), (-w / 2 + 1.0, 3.5, 0.45), m["fabric"])
    box("sofa_back", (-w / 2 + 0.1, 1.5, 0.45), (-w / 2 + 0.35, 3.5, 0.9), m["fabric"])
    box("shelf", (w / 2 - 0.45, 4.5, 0), (w / 2 - 0.05, 6.5, 2.0), m["wood"])
    cylinder("lamp_pole", 1.8, 6.8, 0, 1.6, 0.03, 0.03, m["metal"], n=8)
    cylinder("lamp_shade", 1.8, 6.8, 1.45, 1.8, 0.3, 0.18, m["plaster"])
    box("rug", (-1.5, 2.0, 0), (1.5, 5.0, 0.02), m["fabric"])
    for i, y in enumerate((1.0, 5.0)):
        ceiling_light(f"light{i}", 0.0, y, h - 0.05, 1.5, 120.0)
    return {"eye": (0.0, 0.0, 1.6), "yaw": 0.0, "pitch": 0.0, "kind": "interior"}


def corridor(rng, m) -> dict:
    w, L, h = 2.4, 30.0, 3.0
    box("floor", (-w / 2, -1, -0.1), (w / 2, L, 0), m["tiles"])
    box("ceiling", (-w / 2, -1, h), (w / 2, L, h + 0.1), m["plaster"])
    box("wall_l", (-w / 2 - 0.2, -1, 0), (-w / 2, L, h), m["brick2"])
    box("wall_r", (w / 2, -1, 0), (w / 2 + 0.2, L, h), m["brick2"])
    box("wall_end", (-w / 2, L, 0), (w / 2, L + 0.2, h), m["wood"])
    box("wall_behind", (-w / 2, -1.2, 0), (w / 2, -1, h), m["plaster"])
    for i, y in enumerate(np.arange(3.0, L - 1, 4.0)):
        side = -1 if i % 2 else 1
        box(f"pilaster{i}", (side * w / 2 - 0.15, y, 0), (side * w / 2 + 0.15, y + 0.4, h), m["stone"])
        box(f"lightbox{i}", (-0.3, y, h - 0.08), (0.3, y + 0.6, h), m["metal"])
        ceiling_light(f"light{i}", 0.0, y + 0.3, h - 0.1, 0.6, 40.0)
    box("bench", (-w / 2 + 0.05, 8.0, 0), (-w / 2 + 0.45, 9.5, 0.45), m["wood"])
    return {"eye": (0.0, 0.0, 1.6), "yaw": 0.0, "pitch": 0.0, "kind": "interior"}


def street(rng, m) -> dict:
    L, half = 80.0, 5.0
    box("road", (-half, -40, -0.1), (half, L, 0), m["asphalt"])
    box("pavement_l", (-half - 2, -40, -0.1), (-half, L, 0.12), m["tiles"])
    box("pavement_r", (half, -40, -0.1), (half + 2, L, 0.12), m["tiles"])
    box("far_block_behind", (-half - 2, -50, 0), (half + 2, -40, 25), m["brick2"])
    y = -40.0
    i = 0
    while y < L:
        depth = float(rng.uniform(6, 12))
        for side in (-1, 1):
            height = float(rng.uniform(8, 20))
            x_in = side * (half + 2)
            lo, hi = sorted((x_in, x_in + side * 10))
            box(f"building{i}_{side}", (lo, y, 0), (hi, y + depth - 0.3, height),
                m["brick" if rng.uniform() < 0.5 else "brick2"])
        y += depth
        i += 1
    box("far_block", (-half - 2, L, 0), (half + 2, L + 10, 25), m["plaster"])
    for j, yy in enumerate(np.arange(4.0, L, 12.0)):
        cylinder(f"streetlight{j}", half + 0.6, yy, 0.12, 4.5, 0.08, 0.06, m["metal"], n=8)
    box("car", (-3.5, 12.0, 0), (-1.7, 16.3, 1.5), m["metal"])
    return {"eye": (0.0, 0.0, 1.6), "yaw": 0.0, "pitch": 0.0, "kind": "exterior"}


def plaza(rng, m) -> dict:
    box("ground", (-60, -60, -0.1), (60, 60, 0), m["tiles"])
    cylinder("fountain_basin", 0, 12, 0, 0.6, 3.0, 3.0, m["stone"], n=32)
    cylinder("fountain_water", 0, 12, 0.6, 0.62, 2.8, 2.8, m["water"], n=32)
    cylinder("fountain_column", 0, 12, 0.6, 2.4, 0.35, 0.3, m["stone"], n=16)
    cylinder("fountain_bowl", 0, 12, 2.4, 2.8, 0.5, 1.1, m["stone"], n=16)
    for i, (x, y) in enumerate([(-8, 6), (8, 6), (-8, 18), (8, 18), (-8, 30), (8, 30)]):
        cylinder(f"column{i}", x, y, 0, 6.0, 0.4, 0.35, m["stone"], n=16)
        box(f"column{i}_cap", (x - 0.55, y - 0.55, 6.0), (x + 0.55, y + 0.55, 6.3), m["stone"])
    for i in range(6):
        x, y = float(rng.uniform(-20, 20)), float(rng.uniform(20, 40))
        if abs(x) < 4:
            x += 8 * np.sign(x + 0.01)
        tree(f"tree{i}", x, y, rng, m)
    for i, t in enumerate(np.arange(-30, 30, 10.0)):  # facades all round the square
        for j, (lo, hi) in enumerate([((t, 45), (t + 9.7, 50)), ((t, -30), (t + 9.7, -25)),
                                      ((-35, t + 10), (-30, t + 19.7)), ((30, t + 10), (35, t + 19.7))]):
            box(f"facade{i}_{j}", (*lo, 0), (*hi, float(rng.uniform(9, 16))),
                m["brick" if (i + j) % 2 else "plaster"])
    return {"eye": (0.0, 0.0, 1.6), "yaw": 0.0, "pitch": 0.0, "kind": "exterior"}


def landscape(rng, m) -> dict:
    phases = rng.uniform(0, 2 * np.pi, 4)

    def terrain(X, Y):
        hills = 1.5 * np.sin(X / 17 + phases[0]) * np.cos(Y / 23 + phases[1]) + 0.8 * np.sin(X / 7 + Y / 11 + phases[2])
        return np.where(np.hypot(X, Y) < 4, 0.0, 1.0) * hills * np.clip((np.hypot(X, Y) - 4) / 20, 0, 1)

    grid("terrain", -240, 240, -240, 240, 120, terrain, m["grass"])
    for i, (x, y, r, h) in enumerate([(-200, 420, 160, 120), (50, 500, 200, 170), (260, 380, 150, 100),
                                      (-420, 300, 140, 90), (-300, -350, 200, 140), (350, -250, 150, 110)]):
        cylinder(f"mountain{i}", x, y, -5, h * 0.75, r, r * 0.3, m["rock"], n=24)
        cylinder(f"mountain{i}_snow", x, y, h * 0.75, h, r * 0.3, 0.0, m["snow"], n=24)
    for i in range(10):
        x, y = float(rng.uniform(-40, 40)), float(rng.uniform(10, 70))
        if abs(x) < 3:
            continue
        tree(f"tree{i}", x, y, rng, m)
    box("rock", (3, 9, -0.2), (5, 11, 1.2), m["rock"])
    return {"eye": (0.0, 0.0, 1.6), "yaw": 0.0, "pitch": 0.0, "kind": "exterior"}


def aerial(rng, m) -> dict:
    box("ground", (-150, -150, -0.1), (150, 200, 0), m["grass"])
    for i in range(-3, 4):
        box(f"road_ns{i}", (i * 20 - 3, -150, 0), (i * 20 + 3, 200, 0.03), m["asphalt"])
    k = 0
    for gx in range(-3, 3):
        for gy in range(-4, 7):
            x0, y0 = gx * 20 + 4, gy * 20 - 10
            for hx in (0, 1):
                for hy in (0, 1):
                    if rng.uniform() < 0.15:
                        continue
                    lo = (x0 + hx * 6.5 + 0.5, y0 + hy * 8 + 1, 0)
                    w = float(rng.uniform(4, 5.5))
                    h = float(rng.uniform(3, 8))
                    hi = (lo[0] + w, lo[1] + 6, h)
                    box(f"house{k}", lo, hi, m["plaster" if k % 3 else "brick2"])
                    gable_roof(f"roof{k}", lo, hi, float(rng.uniform(1.5, 2.5)), m["roof"])
                    k += 1
    for i in range(12):
        tree(f"tree{i}", float(rng.uniform(-60, 60)), float(rng.uniform(0, 140)), rng, m)
    return {"eye": (0.0, -30.0, 30.0), "yaw": 0.0, "pitch": -40.0, "kind": "aerial"}


def single_object(rng, m) -> dict:
    box("ground", (-150, -150, -0.1), (150, 150, 0), m["grass"])
    for i, a in enumerate(np.linspace(0, 2 * np.pi, 9)[:-1]):  # a ring of distant trees around the field
        tree(f"tree{i}", 60 * math.cos(a), 60 * math.sin(a), rng, m)
    cylinder("plinth", 0, 6, 0, 0.8, 1.2, 1.2, m["stone"], n=6)
    cylinder("statue_body", 0, 6, 0.8, 2.6, 0.5, 0.35, m["metal"], n=16)
    sphere("statue_head", (0, 6, 2.9), 0.32, m["metal"])
    box("statue_arm", (-0.9, 5.9, 2.1), (0.9, 6.1, 2.25), m["metal"])
    return {"eye": (0.0, 0.0, 1.6), "yaw": 0.0, "pitch": 0.0, "kind": "exterior"}


def archway(rng, m) -> dict:
    box("ground", (-150, -150, -0.1), (150, 150, 0), m["grass"])
    box("path", (-1.2, -40, 0), (1.2, 80, 0.03), m["stone"])
    for i in range(5):
        tree(f"tree_behind{i}", float(rng.uniform(-15, 15)), float(rng.uniform(-30, -12)), rng, m)
    box("arch_left", (-2.6, 8, 0), (-1.6, 9.2, 4.0), m["brick"])
    box("arch_right", (1.6, 8, 0), (2.6, 9.2, 4.0), m["brick"])
    box("arch_lintel", (-2.6, 8, 4.0), (2.6, 9.2, 5.0), m["brick"])
    for side in (-1, 1):
        lo, hi = sorted((side * 2.6, side * 14.0))
        box(f"wall{side}", (lo, 8.2, 0), (hi, 9.0, 2.2), m["stone"])
        box(f"hedge{side}", (side * 2.2 - 0.4, 0, 0), (side * 2.2 + 0.4, 6, 1.2), m["leaves"])
    for i in range(5):
        tree(f"tree{i}", float(rng.uniform(-12, 12)), float(rng.uniform(16, 30)), rng, m)
    box("house", (-5, 34, 0), (5, 42, 6), m["plaster"])
    gable_roof("house_roof", (-5, 34, 0), (5, 42, 6), 3.0, m["roof"])
    return {"eye": (0.0, 0.0, 1.6), "yaw": 0.0, "pitch": 0.0, "kind": "exterior"}


BUILDERS = {"room": room, "corridor": corridor, "street": street, "plaza": plaza, "landscape": landscape,
            "aerial": aerial, "object": single_object, "archway": archway}


# -- camera, export and render ---------------------------------------------------------------------------------


def camera0_pose(spec: dict) -> np.ndarray:
    """Camera 0's OpenCV-axes camera-to-world pose in Blender's world (this defines our world frame)."""
    yaw, pitch = math.radians(spec["yaw"]), math.radians(spec["pitch"])
    rz = np.array([[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0], [0, 0, 1]])
    a = math.pi / 2 + pitch  # Blender camera looks down its -Z; turned 90 deg about x it looks along +Y
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    blender_cam = np.eye(4)
    blender_cam[:3, :3] = rz @ rx
    blender_cam[:3, 3] = spec["eye"]
    return blender_cam @ FLIP


def true_mesh(to_ours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    depsgraph = bpy.context.evaluated_depsgraph_get()
    verts, faces, offset = [], [], 0
    for obj in bpy.context.scene.objects:
        if obj.type != "MESH":
            continue
        evaluated = obj.evaluated_get(depsgraph)
        mesh = evaluated.to_mesh()
        mesh.calc_loop_triangles()
        world = np.array(obj.matrix_world)
        v = np.array([tuple(p.co) for p in mesh.vertices], np.float64).reshape(-1, 3)
        v = v @ world[:3, :3].T + world[:3, 3]
        t = np.array([tuple(tri.vertices) for tri in mesh.loop_triangles], np.int64).reshape(-1, 3)
        verts.append(v)
        faces.append(t + offset)
        offset += len(v)
        evaluated.to_mesh_clear()
    v = np.concatenate(verts)
    v = v @ to_ours[:3, :3].T + to_ours[:3, 3]
    return v, np.concatenate(faces)


def ray_depth(bvh: BVHTree, c2w: np.ndarray, K: np.ndarray, width: int, height: int) -> np.ndarray:
    """Depth along the camera's z axis through every pixel centre (our conventions), inf for sky."""
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1).reshape(-1, 3)
    dirs = rays @ c2w[:3, :3].T
    lengths = np.linalg.norm(dirs, axis=1)
    origin = Vector(c2w[:3, 3])
    out = np.full(len(dirs), np.inf, np.float32)
    for i, (d, n) in enumerate(zip(dirs, lengths)):
        hit = bvh.ray_cast(origin, Vector(d / n))
        if hit[0] is not None:
            out[i] = hit[3] / n  # the ray has z = 1 in the camera, so distance / |ray| is the z-depth
    return out.reshape(height, width)


def render(poses: np.ndarray, cam_to_blender: np.ndarray, hfov: float, width: int, height: int, samples: int,
           threads: int, out: Path, bvh: BVHTree) -> None:
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.cycles.use_adaptive_sampling = False
    scene.cycles.max_bounces = 4
    scene.cycles.seed = 0
    scene.render.threads_mode = "FIXED"
    scene.render.threads = threads
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    scene.render.use_persistent_data = True  # keep the scene and its BVH between frames
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGB"
    scene.view_settings.view_transform = "Standard"
    cam = bpy.data.cameras.new("camera")
    cam.sensor_fit = "HORIZONTAL"
    cam.sensor_width = 36.0
    cam.lens = 18.0 / math.tan(math.radians(hfov) / 2)  # the same horizontal field of view as our K
    cam.clip_start, cam.clip_end = 0.05, 5000.0
    obj = bpy.data.objects.new("camera", cam)
    scene.collection.objects.link(obj)
    scene.camera = obj
    f = (width / 2) / math.tan(math.radians(hfov) / 2)
    K = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])
    (out / "frames").mkdir(parents=True, exist_ok=True)
    depth = np.empty((len(poses), height, width), np.float32)
    for i, pose in enumerate(poses):
        obj.matrix_world = Matrix((cam_to_blender @ pose @ FLIP).tolist())
        scene.render.filepath = str(out / "frames" / f"{i:04d}.png")
        bpy.ops.render.render(write_still=True)
        depth[i] = ray_depth(bvh, pose, K, width, height)
    np.savez_compressed(out / "depth.npz", depth=depth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scene", required=True, choices=sorted(BUILDERS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--poses", type=Path, help="npz with c2w (N,4,4): OpenCV camera-to-world, our world")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=144)
    parser.add_argument("--hfov", type=float, default=60.0)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    bpy.ops.wm.read_factory_settings(use_empty=True)
    rng = np.random.default_rng(args.seed)
    materials = _materials(rng)
    spec = BUILDERS[args.scene](rng, materials)
    _sky()
    cam0 = camera0_pose(spec)
    vertices, faces = true_mesh(np.linalg.inv(cam0))
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / "mesh.npz", vertices=vertices, faces=faces)
    (args.out / "camera0.json").write_text(json.dumps({"scene": args.scene, "seed": args.seed, **spec,
                                                       "camera0_blender": cam0.tolist()}))
    if args.poses is not None:
        poses = np.load(args.poses)["c2w"].astype(np.float64)
        bvh = BVHTree.FromPolygons([tuple(v) for v in vertices], [tuple(f) for f in faces])
        render(poses, cam0, args.hfov, args.width, args.height, args.samples, args.threads, args.out, bvh)


if __name__ == "__main__":
    main()
