"""A LevelAsset as one binary glTF (.glb): the LOD chain, its textures and the collision proxy.

Two layers, as in Blender's io_scene_gltf2: `_GlbBuilder` knows only the format (buffer views, accessors,
alignment, embedded PNGs) and nothing about level assets; `write_glb` and the helpers below it map the
asset onto glTF nodes, meshes and materials, and do the one change of axes from OpenCV to glTF (usd.py
writes the same Y-up frame through the same helpers: `lod_attributes`, `y_up_points`).

Layout of the file:

    scene ─ <name>                root node, no mesh
            ├─ <name>_LOD0        MSFT_lod {ids: [LOD1..LODn]}, extras.MSFT_screencoverage
            ├─ <name>_LOD1 ...    one mesh each; extras: screen_coverage, geometric_error
            └─ <name>_collider    positions and indices only, no material; extras: {"collider": true}

Every LOD node sits in the scene graph, because the importers that follow Unity's LOD-group naming
(Unity, Blender) find the levels by name there; MSFT_lod is listed in extensionsUsed only, so a viewer that
does not know it still opens the file (and shows every level at once).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pygltflib as gl
from PIL import Image

from .. import __version__
from ..assets import Collider, LevelAsset, LodLevel
from ..assets.geometry import perpendicular, repeats_a_vertex, unit
from ..files import write_atomically

# OpenCV (x right, y down, z forward) to glTF (x right, y up, z backward): a 180-degree turn about x.
# A rotation keeps handedness, so triangle winding and the tangents' w stay as they are.
OPENCV_TO_GLTF = np.array([1.0, -1.0, -1.0], np.float32)

MSFT_LOD = "MSFT_lod"
# glTF's buffer views and accessors must start on 4-byte boundaries (the widest component, float32).
_ALIGNMENT = 4
# 65535 is the primitive-restart value of uint16 indices, which glTF forbids in an index buffer.
_MAX_UINT16_INDEX = 65534


def write_glb(asset: LevelAsset, path: Path) -> dict[str, Any]:
    """Write `asset` to `path` as a .glb, atomically; return a small summary of what was written."""
    if not asset.lods:
        raise ValueError(f"asset {asset.name!r} has no LOD levels to export")
    builder = _GlbBuilder()
    extras = plain_json(asset.extras)
    # Also on the root node: Blender's importer drops asset.extras but keeps node extras as custom properties.
    root = builder.add_node(asset.name, extras=extras)
    lod_nodes = _add_lods(builder, asset)
    collider_node, collider_triangles = _add_collider(builder, asset.name, asset.collider)
    builder.gltf.nodes[root].children = [n for n, _ in lod_nodes] + [collider_node]
    builder.gltf.scenes = [gl.Scene(name=asset.name, nodes=[root])]
    builder.gltf.scene = 0
    builder.gltf.asset = gl.Asset(generator=f"lyra-assets {__version__}", version="2.0",
                                  extras=extras)
    data = builder.to_glb()
    write_atomically(Path(path), lambda f: f.write(data))
    return {
        "path": str(path),
        "bytes": len(data),
        "triangles": [t for _, t in lod_nodes],
        "collider_triangles": collider_triangles,
        "nodes": [node.name for node in builder.gltf.nodes],
        "images": len(builder.gltf.images),
    }


def _add_lods(builder: _GlbBuilder, asset: LevelAsset) -> list[tuple[int, int]]:
    """One node per level; returns (node index, triangles) per level."""
    # Keyed by the arrays' identity: levels that share an atlas share its image, texture and material.
    textures: dict[int, int] = {}
    materials: dict[tuple[int, int], int] = {}

    def texture(pixels: np.ndarray, label: str) -> int:
        if id(pixels) not in textures:
            image = builder.add_png(png_bytes(pixels, label), f"{asset.name}_{label}{len(builder.gltf.images)}")
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
        mesh = builder.add_mesh(name, attributes, faces, material=materials[key])
        node = builder.add_node(name, mesh=mesh, extras={
            "lod": level,
            "screen_coverage": float(lod.screen_coverage),
            "geometric_error": float(lod.geometric_error),
        })
        out.append((node, len(faces)))
    if len(out) > 1:
        first = builder.gltf.nodes[out[0][0]]
        first.extensions = {MSFT_LOD: {"ids": [node for node, _ in out[1:]]}}
        first.extras["MSFT_screencoverage"] = [float(lod.screen_coverage) for lod in asset.lods]
        builder.gltf.extensionsUsed = [MSFT_LOD]
    return out


def _add_collider(builder: _GlbBuilder, asset_name: str, collider: Collider) -> tuple[int, int]:
    name = f"{asset_name}_collider"
    faces = drop_degenerate_triangles(collider.faces, name)
    mesh = builder.add_mesh(name, {"POSITION": y_up_points(collider.vertices, name)}, faces, material=None)
    return builder.add_node(name, mesh=mesh, extras={"collider": True}), len(faces)


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

    def add_node(self, name: str, mesh: int | None = None, extras: dict[str, Any] | None = None) -> int:
        self.gltf.nodes.append(gl.Node(name=name, mesh=mesh, extras=dict(extras or {})))
        return len(self.gltf.nodes) - 1

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
