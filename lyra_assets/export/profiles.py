"""Engine profiles: the same level asset laid out for one engine's own import conventions, one .glb each.

| profile | LODs                                              | collider                                        |
| ------- | ------------------------------------------------- | ----------------------------------------------- |
| gltf    | LOD0 in the scene, LOD1..n via its MSFT_lod       | OMI_physics_shape trimesh, a mesh no node draws |
| unity   | <name>_LOD0..n siblings under the root, MSFT_lod  | as gltf                                         |
| unreal  | <name>_LOD0..n siblings under the root            | UCX_<name>_LOD0_NN convex pieces                |
| godot   | <name>_LOD0, <name>_LODk-noimp (not imported)     | <name>_collider-colonly (a StaticBody)          |
| web     | as gltf; meshopt geometry, WebP albedo, lossless  | as gltf                                         |
|         | WebP normal maps (gltf-transform)                 |                                                 |

The web profile runs the gltf-transform command line (npm @gltf-transform/cli), which keeps nodes and
meshes but drops extensions it doesn't know: MSFT_lod and the OMI physics extensions are put back after it.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tempfile
import typing
from pathlib import Path
from typing import Any

import numpy as np
import trimesh

from ..assets import Collider, LevelAsset
from ..errors import LyraAssetsError
from ..files import write_atomically
from ..settings import ProfileName
from .gltf import MSFT_LOD, OMI_BODY, OMI_SHAPE, Layout, write_glb

PROFILES: tuple[str, ...] = typing.get_args(ProfileName)
DEFAULT_PROFILE = "gltf"

_LAYOUTS = {
    "gltf": Layout(),
    "unity": Layout(lods_in_scene=True),
    "unreal": Layout(lods_in_scene=True, msft_lod=False, collider_nodes=True),
    "godot": Layout(lods_in_scene=True, msft_lod=False, hidden_lod_suffix="-noimp", collider_nodes=True),
    "web": Layout(),
}
# UCX pieces: the collider's triangles grouped by the axis they face and by cells of this size, each
# group's convex hull thickened this much behind the surface (the side away from where cameras stood).
UCX_CELL_M = 2.0
UCX_THICKNESS_M = 0.1
_AXES = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float64)
_REPO_ROOT = Path(__file__).resolve().parents[2]


def profile_file(folder: Path, name: str, profile: str) -> Path:
    """<name>.glb for the default profile, <name>.<profile>.glb for the others."""
    return Path(folder) / (f"{name}.glb" if profile == DEFAULT_PROFILE else f"{name}.{profile}.glb")


def write_profile(asset: LevelAsset, profile: str, path: Path) -> dict[str, Any]:
    """Write `asset` for one engine profile to `path` (atomically); return the exporter's summary."""
    if profile not in PROFILES:
        raise LyraAssetsError(f"unknown export profile {profile!r}; choose from {', '.join(PROFILES)}")
    layout = _LAYOUTS[profile]
    if profile == "unreal":
        pieces = convex_pieces(asset.collider)
        colliders = [(f"UCX_{asset.name}_LOD0_{k:02d}", piece) for k, piece in enumerate(pieces)]
        return {**write_glb(asset, path, layout, colliders), "profile": profile}
    if profile == "godot":
        colliders = [(f"{asset.name}_collider-colonly", asset.collider)]
        return {**write_glb(asset, path, layout, colliders), "profile": profile}
    if profile == "web":
        return {**_write_web(asset, Path(path)), "profile": profile}
    return {**write_glb(asset, path, layout), "profile": profile}


# -- unreal ------------------------------------------------------------------------------------------------


def convex_pieces(collider: Collider) -> list[Collider]:
    """The collider as convex pieces, for engines that collide with convex hulls only (Unreal's UCX_).

    A room's collider is mostly walls, floors and ceilings: triangles facing the same axis within a
    UCX_CELL_M cell are one piece, the hull of their corners and the same corners UCX_THICKNESS_M behind
    the surface, so the pieces never fill the free space in front of the surface. Openings smaller than a
    cell in a wall (a doorway) are closed by their wall piece's hull.
    """
    vertices = np.asarray(collider.vertices, np.float64)
    faces = np.asarray(collider.faces, np.int64)
    corners = vertices[faces]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    facing = np.argmax(normals @ _AXES.T, axis=1)
    cells = np.floor(corners.mean(axis=1) / UCX_CELL_M).astype(np.int64)
    _, group = np.unique(np.column_stack([facing, cells]), axis=0, return_inverse=True)
    pieces = []
    for g in range(group.max() + 1):
        chosen = group.ravel() == g
        points = np.unique(vertices[faces[chosen].ravel()], axis=0)
        behind = points - UCX_THICKNESS_M * _AXES[facing[chosen][0]]
        hull = trimesh.convex.convex_hull(np.vstack([points, behind]))
        pieces.append(Collider(hull.vertices.astype(np.float32), hull.faces.astype(np.uint32)))
    return pieces


# -- web ---------------------------------------------------------------------------------------------------


def gltf_transform() -> list[str]:
    """The gltf-transform command line: $LYRA_ASSETS_GLTF_TRANSFORM, the repository's node_modules, or PATH."""
    candidates = [os.environ.get("LYRA_ASSETS_GLTF_TRANSFORM"),
                  str(_REPO_ROOT / "node_modules" / ".bin" / "gltf-transform"), shutil.which("gltf-transform")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return [candidate]
    raise LyraAssetsError("the web profile needs the gltf-transform command line: `npm install -g "
                          "@gltf-transform/cli` (or `npm ci` in the repository), or set LYRA_ASSETS_GLTF_TRANSFORM")


def _write_web(asset: LevelAsset, path: Path) -> dict[str, Any]:
    command = gltf_transform()
    with tempfile.TemporaryDirectory(prefix=".web-", dir=path.parent) as scratch:
        steps = [Path(scratch) / f"{k}.glb" for k in range(4)]
        summary = write_glb(asset, steps[0], _LAYOUTS["web"])
        for source, target, arguments in [
            (steps[0], steps[1], ["webp", "--slots", "baseColorTexture"]),  # lossy: albedo
            (steps[1], steps[2], ["webp", "--slots", "normalTexture", "--lossless", "true"]),
            (steps[2], steps[3], ["meshopt"]),
        ]:
            run = subprocess.run([*command, arguments[0], str(source), str(target), *arguments[1:]],
                                 capture_output=True, text=True, timeout=600)
            if run.returncode != 0:
                raise LyraAssetsError(f"gltf-transform {arguments[0]} failed on {asset.name}: "
                                      f"{(run.stderr or run.stdout).strip()[-500:]}")
        data = _restore_extensions(steps[3].read_bytes(), asset.name, len(asset.lods))
    write_atomically(path, lambda f: f.write(data))
    return {**summary, "path": str(path), "bytes": len(data), "uncompressed_bytes": summary["bytes"]}


def _restore_extensions(glb: bytes, name: str, levels: int) -> bytes:
    """Put MSFT_lod and the OMI physics extensions back, finding nodes and meshes by their names."""
    document, binary = _split_glb(glb)
    nodes = {node.get("name"): k for k, node in enumerate(document["nodes"])}
    meshes = {mesh.get("name"): k for k, mesh in enumerate(document["meshes"])}
    if levels > 1:
        lod0 = document["nodes"][nodes[f"{name}_LOD0"]]
        lod0.setdefault("extensions", {})[MSFT_LOD] = {"ids": [nodes[f"{name}_LOD{k}"] for k in range(1, levels)]}
    document.setdefault("extensions", {})[OMI_SHAPE] = {
        "shapes": [{"type": "trimesh", "trimesh": {"mesh": meshes[f"{name}_collider"]}}]}
    document["nodes"][nodes[name]].setdefault("extensions", {})[OMI_BODY] = {"collider": {"shape": 0}}
    used = document.setdefault("extensionsUsed", [])
    used += [e for e in ([MSFT_LOD] if levels > 1 else []) + [OMI_BODY, OMI_SHAPE] if e not in used]
    return _join_glb(document, binary)


def _split_glb(glb: bytes) -> tuple[dict[str, Any], bytes]:
    magic, _, _ = struct.unpack_from("<4sII", glb, 0)
    if magic != b"glTF":
        raise ValueError("not a binary glTF")
    json_length, _ = struct.unpack_from("<II", glb, 12)
    document = json.loads(glb[20:20 + json_length])
    rest = glb[20 + json_length:]
    binary = rest[8:8 + struct.unpack_from("<I", rest, 0)[0]] if rest else b""
    return document, binary


def _join_glb(document: dict[str, Any], binary: bytes) -> bytes:
    text = json.dumps(document, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)  # chunks are 4-byte aligned; JSON pads with spaces, binary with zeros
    binary += b"\0" * (-len(binary) % 4)
    chunks = struct.pack("<II", len(text), 0x4E4F534A) + text
    if binary:
        chunks += struct.pack("<II", len(binary), 0x004E4942) + binary
    return struct.pack("<4sII", b"glTF", 2, 12 + len(chunks)) + chunks
