"""A LevelAsset as one binary glTF (.glb): the LOD chain, its textures and the collision proxy.

Two layers, as in Blender's io_scene_gltf2: `_GlbBuilder` knows only the format (buffer views, accessors,
alignment, embedded PNGs) and nothing about level assets; `write_glb` and the helpers below it map the
asset onto glTF nodes, meshes and materials, and do the one change of axes from OpenCV to glTF (usd.py
writes the same Y-up frame through the same helpers: `lod_attributes`, `y_up_points`).

The default layout (`Layout()`, the `gltf` profile) follows MSFT_lod as its spec intends:

    scene 0 (the default) "<name> scene"
      └─ <name>                 root node, no mesh; extras: provenance and `level` (spawn, bounding
         │                      sphere, LOD switch distances); OMI_physics_body {collider: {shape: 0}}
         └─ <name>_LOD0         MSFT_lod {ids: [LOD1..LODn]}, extras.MSFT_screencoverage
    scene 1 "<name> lower LODs (MSFT_lod)", which clients don't draw (they draw the default scene):
         <name>_LOD1 ...        reached through LOD0's MSFT_lod.ids; one mesh each
    no node at all:
         mesh <name>_collider   positions and indices only, no material; OMI_physics_shape
                                {shapes: [{type: "trimesh", trimesh: {mesh}}]}

So a client that knows no extension draws LOD0 alone and never the collider: glTF clients draw the
default scene's nodes, and the collider is no node. (In no scene at all, the lower levels would be drawn by
Blender, which imports such nodes into the open scene.) OMI_physics_shape is the physics extension that takes a mesh
without a node (KHR_physics_rigid_bodies' mesh colliders need a node); Godot 4 imports it as a
StaticBody3D with a ConcavePolygonShape3D. Engine profiles (profiles.py) change the layout.

Origin: the glTF world is the first camera's (the spawn's) position, Y up, metres; the LOD nodes sit at
the centre of LOD0's bounding sphere (their vertices relative to it), so engines that measure LOD distance
from a node's pivot (three.js' LOD) measure it from the middle of the level.
"""
from __future__ import annotations

import io
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pygltflib as gl
from PIL import Image

from .. import __version__
from ..assets import Collider, LevelAsset, LodLevel
from ..assets.geometry import perpendicular, repeats_a_vertex, unit
from ..files import write_atomically
from ..rotations import quaternion_from_matrix

# OpenCV (x right, y down, z forward) to glTF (x right, y up, z backward): a 180-degree turn about x.
# A rotation keeps handedness, so triangle winding and the tangents' w stay as they are.
OPENCV_TO_GLTF = np.array([1.0, -1.0, -1.0], np.float32)

MSFT_LOD = "MSFT_lod"
OMI_SHAPE = "OMI_physics_shape"
OMI_BODY = "OMI_physics_body"
# LOD switch distances are stated for this vertical field of view (Unity's and Godot's default camera).
SWITCH_VFOV_DEG = 60.0
# glTF's buffer views and accessors must start on 4-byte boundaries (the widest component, float32).
_ALIGNMENT = 4
# 65535 is the primitive-restart value of uint16 indices, which glTF forbids in an index buffer.
_MAX_UINT16_INDEX = 65534


@dataclass(frozen=True)
class Layout:
    """Where the LODs and the collider go in the file; the default is the `gltf` profile above."""

    lods_in_scene: bool = False  # LOD1..n as the root's children too (engines' _LODn naming conventions)
    msft_lod: bool = True  # LOD0 lists LOD1..n in MSFT_lod
    hidden_lod_suffix: str = ""  # appended to LOD1..n's node names (Godot's "-noimp")
    collider_nodes: bool = False  # colliders as nodes under the root instead of OMI_physics_shape meshes


def level_info(asset: LevelAsset) -> dict[str, Any]:
    """Spawn, bounding sphere and LOD switch distances, in the glTF frame (Y up, metres): for the root
    node's extras and the manifest."""
    centre, radius = bounding_sphere(asset)
    half = math.tan(math.radians(SWITCH_VFOV_DEG) / 2)
    # Level k shows once the sphere covers less than level k-1's screen coverage (a fraction of the
    # screen's height): at distance r / (coverage * tan(fov / 2)).
    distances = [0.0] + [radius / (lod.screen_coverage * half) if lod.screen_coverage > 0 else None
                         for lod in asset.lods[:-1]]
    spawn = asset.spawn
    rotation = np.diag(OPENCV_TO_GLTF.astype(np.float64))
    # A camera turns the same way in both frames once its own axes are swapped too: D R D.
    turn = rotation @ spawn.c2w[:3, :3] @ rotation
    return {
        "spawn": {
            "position": _vector(spawn.c2w[:3, 3] * OPENCV_TO_GLTF),
            "rotation": [round(float(c), 6) + 0.0 for c in np.roll(quaternion_from_matrix(turn), -1)],  # x y z w
            "yfov_deg": None if spawn.yfov_deg is None else round(spawn.yfov_deg, 3),
            "ground": None if spawn.ground is None else _vector(spawn.ground * OPENCV_TO_GLTF),
            "floor_patch_m2": round(spawn.patched_m2, 3),
        },
        "bounding_sphere": {"center": _vector(centre), "radius": round(radius, 4)},
        "lod_switch": {"vertical_fov_deg": SWITCH_VFOV_DEG,
                       "screen_coverage": [float(lod.screen_coverage) for lod in asset.lods],
                       "distance_m": [None if d is None else round(d, 3) for d in distances]},
    }


def bounding_sphere(asset: LevelAsset) -> tuple[np.ndarray, float]:
    """Centre (glTF frame) and radius of LOD0's bounding sphere: the middle of its box, and its farthest
    vertex from there."""
    vertices = np.asarray(asset.lods[0].vertices, np.float64) * OPENCV_TO_GLTF
    centre = (vertices.min(axis=0) + vertices.max(axis=0)) / 2
    return centre, float(np.linalg.norm(vertices - centre, axis=1).max())


def write_glb(asset: LevelAsset, path: Path, layout: Layout = Layout(),
              colliders: list[tuple[str, Collider]] | None = None) -> dict[str, Any]:
    """Write `asset` to `path` as a .glb, atomically; return a small summary of what was written.

    colliders: (name, mesh) pieces instead of the asset's one collider named <name>_collider.
    """
    if not asset.lods:
        raise ValueError(f"asset {asset.name!r} has no LOD levels to export")
    builder = _GlbBuilder()
    info = level_info(asset)
    extras = {**plain_json(asset.extras), "level": info}
    # Also on the root node: Blender's importer drops asset.extras but keeps node extras as custom properties.
    root = builder.add_node(asset.name, extras=extras)
    centre = np.array(info["bounding_sphere"]["center"], np.float32)
    lod_nodes = _add_lods(builder, asset, layout, centre)
    children = [n for n, _ in lod_nodes] if layout.lods_in_scene else [lod_nodes[0][0]]
    pieces = colliders if colliders is not None else [(f"{asset.name}_collider", asset.collider)]
    collider_meshes = [_add_collider(builder, name, collider) for name, collider in pieces]
    if layout.collider_nodes:
        children += [builder.add_node(name, mesh=mesh, extras={"collider": True})
                     for (name, _), (mesh, _) in zip(pieces, collider_meshes)]
    elif len(collider_meshes) == 1:
        _add_omi_collider(builder, root, collider_meshes[0][0])
    else:
        raise ValueError("collider pieces go in nodes (Layout.collider_nodes)")
    builder.gltf.nodes[root].children = children
    # The scene's name differs from the root node's: clients that name objects after both would rename one.
    builder.gltf.scenes = [gl.Scene(name=f"{asset.name} scene", nodes=[root])]
    if not layout.lods_in_scene and len(lod_nodes) > 1:
        # The lower levels' nodes need a home: a scene of their own rather than none (Blender imports nodes
        # in no scene into the open scene, but a glTF's other scenes into Blender scenes of their own).
        builder.gltf.scenes.append(gl.Scene(name=f"{asset.name} lower LODs (MSFT_lod)",
                                            nodes=[n for n, _ in lod_nodes[1:]]))
    builder.gltf.scene = 0
    builder.gltf.asset = gl.Asset(generator=f"lyra-assets {__version__}", version="2.0",
                                  extras=extras)
    data = builder.to_glb()
    write_atomically(Path(path), lambda f: f.write(data))
    drawn = {n for n, _ in lod_nodes} if layout.lods_in_scene else {lod_nodes[0][0]}
    return {
        "path": str(path),
        "bytes": len(data),
        "triangles": [t for _, t in lod_nodes],
        "drawn_triangles": sum(t for n, t in lod_nodes if n in drawn),
        "collider_triangles": sum(t for _, t in collider_meshes),
        "nodes": [node.name for node in builder.gltf.nodes],
        "images": len(builder.gltf.images),
        "level": info,
    }


def _add_lods(builder: _GlbBuilder, asset: LevelAsset, layout: Layout,
              centre: np.ndarray) -> list[tuple[int, int]]:
    """One node per level, at the bounding sphere's centre; returns (node index, triangles) per level."""
    # Keyed by the arrays' identity: levels that share an atlas share its image, texture and material.
    textures: dict[int, int] = {}
    materials: dict[tuple[int, int], int] = {}
    images = {id(pixels): (pixels, label) for lod in asset.lods
              for pixels, label in ((lod.albedo, "albedo"), (lod.normal_map, "normal"))}
    with ThreadPoolExecutor() as pool:  # Pillow's zlib releases the GIL: the PNGs encode a core each
        encoded = dict(zip(images, pool.map(lambda image: png_bytes(*image), images.values())))

    def texture(pixels: np.ndarray, label: str) -> int:
        if id(pixels) not in textures:
            image = builder.add_png(encoded[id(pixels)], f"{asset.name}_{label}{len(builder.gltf.images)}")
            textures[id(pixels)] = builder.add_texture(image)
        return textures[id(pixels)]

    out = []
    for level, lod in enumerate(asset.lods):
        name = f"{asset.name}_LOD{level}"
        key = (texture(lod.albedo, "albedo"), texture(lod.normal_map, "normal"))
        if key not in materials:
            materials[key] = builder.add_material(f"{asset.name}_material{len(materials)}", *key)
        faces = drop_degenerate_triangles(lod.faces, name)
        attributes = lod_attributes(lod, name)
        attributes["POSITION"] = attributes["POSITION"] - centre
        mesh = builder.add_mesh(name, attributes, faces, material=materials[key])
        node = builder.add_node(name + (layout.hidden_lod_suffix if level else ""), mesh=mesh, extras={
            "lod": level,
            "screen_coverage": float(lod.screen_coverage),
            "geometric_error": float(lod.geometric_error),
        }, translation=centre)
        out.append((node, len(faces)))
    if len(out) > 1 and layout.msft_lod:
        first = builder.gltf.nodes[out[0][0]]
        first.extensions = {MSFT_LOD: {"ids": [node for node, _ in out[1:]]}}
        first.extras["MSFT_screencoverage"] = [float(lod.screen_coverage) for lod in asset.lods]
        builder.use_extension(MSFT_LOD)
    return out


def _add_collider(builder: _GlbBuilder, name: str, collider: Collider) -> tuple[int, int]:
    """The collider's mesh (in the root's frame); returns (mesh index, triangles)."""
    faces = drop_degenerate_triangles(collider.faces, name)
    return builder.add_mesh(name, {"POSITION": y_up_points(collider.vertices, name)}, faces, material=None), len(faces)


def _add_omi_collider(builder: _GlbBuilder, root: int, mesh: int) -> None:
    """The root becomes a static body whose collider is the mesh, which no node draws."""
    builder.gltf.extensions[OMI_SHAPE] = {"shapes": [{"type": "trimesh", "trimesh": {"mesh": mesh}}]}
    builder.gltf.nodes[root].extensions[OMI_BODY] = {"collider": {"shape": 0}}
    builder.use_extension(OMI_BODY)
    builder.use_extension(OMI_SHAPE)


def _vector(v: np.ndarray) -> list[float]:
    return [round(float(x), 4) + 0.0 for x in v]  # + 0.0: no -0.0 from the change of axes


def lod_attributes(lod: LodLevel, name: str) -> dict[str, np.ndarray]:
    """The level's vertex data in glTF axes, with unit normals and tangents as the format requires."""
    positions = y_up_points(lod.vertices, name)
    # In float64, so they are still unit after the cast to float32.
    normals = unit(_finite(lod.normals, name, "normals").astype(np.float64) * OPENCV_TO_GLTF)
    # A zero normal (a vertex no face uses after decimation) still has to be unit-length in the file.
    normals[~normals.any(axis=1)] = (0.0, 1.0, 0.0)
    tangents = _finite(lod.tangents, name, "tangents").astype(np.float64)
    xyz = unit(tangents[:, :3] * OPENCV_TO_GLTF)
    # A zero tangent (a vertex whose UVs collapsed) gets any direction perpendicular to its normal.
    bad = ~xyz.any(axis=1)
    xyz[bad] = perpendicular(normals[bad])
    handedness = np.where(tangents[:, 3] < 0, -1.0, 1.0)[:, None]
    uv = _finite(lod.uv, name, "uv").astype(np.float32)
    count = len(positions)
    for label, array in (("normals", normals), ("uv", uv), ("tangents", tangents)):
        if len(array) != count:
            raise ValueError(f"{name}: {len(array)} {label} for {count} vertices")
    return {
        "POSITION": positions,
        "NORMAL": normals.astype(np.float32),
        "TANGENT": np.hstack([xyz, handedness]).astype(np.float32),
        "TEXCOORD_0": uv,
    }


def y_up_points(vertices: np.ndarray, name: str) -> np.ndarray:
    """Positions in the exported frame (glTF's and USD's Y-up, metres), float32."""
    return _finite(vertices, name, "vertices").astype(np.float32) * OPENCV_TO_GLTF


def _finite(array: np.ndarray, name: str, label: str) -> np.ndarray:
    array = np.asarray(array)
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: {label} contain NaN or infinity")
    return array


def drop_degenerate_triangles(faces: np.ndarray, name: str) -> np.ndarray:
    """Triangles that repeat a vertex draw nothing; the validator reports them, so they are left out."""
    faces = np.asarray(faces, np.int64).reshape(-1, 3)
    faces = faces[~repeats_a_vertex(faces)]
    if len(faces) == 0:
        raise ValueError(f"{name}: no triangles to export")
    return faces


def png_bytes(pixels: np.ndarray, label: str) -> bytes:
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ValueError(f"{label} texture must be (H, W, 3) uint8, got {pixels.shape} {pixels.dtype}")
    image = Image.fromarray(pixels)
    # Mipmaps of non-power-of-two images are unsupported on WebGL 1 and older mobile GPUs (the validator
    # flags them). UVs are normalised, so resampling up to the next power of two maps identically.
    pot = tuple(1 << (side - 1).bit_length() for side in image.size)
    if pot != image.size:
        image = image.resize(pot, Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def plain_json(value: Any) -> Any:
    """Extras as plain JSON values (numpy scalars and arrays, paths and tuples are common in them)."""
    if isinstance(value, dict):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_json(v) for v in value]
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"{type(value).__name__} in the asset's extras is not JSON serialisable")


class _GlbBuilder:
    """glTF bookkeeping: one binary buffer, tightly packed buffer views (one accessor each), PNG images."""

    def __init__(self) -> None:
        self.gltf = gl.GLTF2()
        self._blob = bytearray()
        self._sampler: int | None = None

    def _add_view(self, data: bytes, target: int | None) -> int:
        self._blob += b"\0" * (-len(self._blob) % _ALIGNMENT)
        self.gltf.bufferViews.append(gl.BufferView(buffer=0, byteOffset=len(self._blob),
                                                   byteLength=len(data), target=target))
        self._blob += data
        return len(self.gltf.bufferViews) - 1

    def _add_accessor(self, array: np.ndarray, target: int, with_bounds: bool = False) -> int:
        kinds = {1: gl.SCALAR, 2: gl.VEC2, 3: gl.VEC3, 4: gl.VEC4}
        components = {np.dtype(np.float32): gl.FLOAT, np.dtype(np.uint16): gl.UNSIGNED_SHORT,
                      np.dtype(np.uint32): gl.UNSIGNED_INT}
        array = np.ascontiguousarray(array)
        view = self._add_view(array.tobytes(), target)  # glTF is little-endian, as are x86 and ARM
        flat = array.reshape(len(array), -1)
        accessor = gl.Accessor(bufferView=view, componentType=components[array.dtype], count=len(array),
                               type=kinds[flat.shape[1]])
        if with_bounds:  # required for POSITION; the validator checks them against the data exactly
            accessor.min = [float(x) for x in flat.min(axis=0)]
            accessor.max = [float(x) for x in flat.max(axis=0)]
        self.gltf.accessors.append(accessor)
        return len(self.gltf.accessors) - 1

    def add_mesh(self, name: str, attributes: dict[str, np.ndarray], faces: np.ndarray,
                 material: int | None) -> int:
        count = len(attributes["POSITION"])
        if faces.min() < 0 or faces.max() >= count:
            raise ValueError(f"{name}: face indices outside 0..{count - 1}")
        index_type = np.uint16 if count - 1 <= _MAX_UINT16_INDEX else np.uint32
        ids = {key: self._add_accessor(value, gl.ARRAY_BUFFER, with_bounds=key == "POSITION")
               for key, value in attributes.items()}
        indices = self._add_accessor(faces.astype(index_type).reshape(-1), gl.ELEMENT_ARRAY_BUFFER)
        primitive = gl.Primitive(attributes=gl.Attributes(**ids), indices=indices, material=material,
                                 mode=gl.TRIANGLES)
        self.gltf.meshes.append(gl.Mesh(name=name, primitives=[primitive]))
        return len(self.gltf.meshes) - 1

    def add_node(self, name: str, mesh: int | None = None, extras: dict[str, Any] | None = None,
                 translation: np.ndarray | None = None) -> int:
        node = gl.Node(name=name, mesh=mesh, extras=dict(extras or {}), extensions={})
        if translation is not None and np.any(translation):
            node.translation = [float(x) for x in translation]
        self.gltf.nodes.append(node)
        return len(self.gltf.nodes) - 1

    def use_extension(self, name: str) -> None:
        if name not in self.gltf.extensionsUsed:
            self.gltf.extensionsUsed.append(name)

    def add_png(self, data: bytes, name: str) -> int:
        view = self._add_view(data, target=None)  # image views carry no GPU buffer target
        self.gltf.images.append(gl.Image(name=name, bufferView=view, mimeType="image/png"))
        return len(self.gltf.images) - 1

    def add_texture(self, image: int) -> int:
        if self._sampler is None:
            # Trilinear filtering; clamped, because an atlas's edge texels must not bleed into the far side.
            self.gltf.samplers.append(gl.Sampler(magFilter=gl.LINEAR, minFilter=gl.LINEAR_MIPMAP_LINEAR,
                                                 wrapS=gl.CLAMP_TO_EDGE, wrapT=gl.CLAMP_TO_EDGE))
            self._sampler = len(self.gltf.samplers) - 1
        self.gltf.textures.append(gl.Texture(source=image, sampler=self._sampler))
        return len(self.gltf.textures) - 1

    def add_material(self, name: str, base_colour: int, normal: int) -> int:
        # Baked lighting-free albedo on a rough dielectric: the scans carry no metal or gloss information.
        self.gltf.materials.append(gl.Material(
            name=name,
            pbrMetallicRoughness=gl.PbrMetallicRoughness(baseColorTexture=gl.TextureInfo(index=base_colour),
                                                         metallicFactor=0.0, roughnessFactor=1.0),
            normalTexture=gl.NormalMaterialTexture(index=normal),
            doubleSided=False,
        ))
        return len(self.gltf.materials) - 1

    def to_glb(self) -> bytes:
        self._blob += b"\0" * (-len(self._blob) % _ALIGNMENT)
        self.gltf.buffers = [gl.Buffer(byteLength=len(self._blob))]
        self.gltf.set_binary_blob(bytes(self._blob))
        return b"".join(self.gltf.save_to_bytes())
