"""A LevelAsset as physics-ready USD for robot simulators (Isaac Sim, any PhysX or USD Physics client).

Written with usd-core (Pixar's reference implementation), imported lazily: the package's core needs none of
it. The geometry goes through gltf.py's helpers, so USD and the GLB share one Y-up frame (metres) and the
change of axes from OpenCV happens in one place.

Layout of the stage (one layer; packed with its textures/ into an ARKit-compliant .usdz, or a .usdc next to a
`<stem>_textures/` folder):

    /<name>            Xform, defaultPrim, kind component; customData.lyra_assets: provenance
        variantSet "LOD" = LOD0 ... LODn (LOD0 selected); every variant defines
          visual         Mesh with that level's triangles, normals, primvars:st, bound to its material
        Looks/materialK  Material: UsdPreviewSurface fed by UsdUVTexture (albedo sRGB, normal map raw)
        collider       Mesh, purpose guide (never rendered), PhysicsCollisionAPI + PhysicsMeshCollisionAPI
                       (approximation none: it is already a low-triangle proxy); static, no rigid body
        spawn          Xform at the first camera, facing its view (-Z); customData: the clearance there
    /PhysicsScene      gravity 9.81 m/s² along -Y; outside the defaultPrim, so referencing the asset into
                       a simulator's own stage brings no second scene along

Texture coordinates: the asset's v grows downwards from the image's top (glTF's convention); USD's st has its
origin at the bottom left, so t = 1 - v. The tangent-space normal maps (+Y green up) need no change: +Y
points to the image's top in both conventions.
"""
from __future__ import annotations

import tempfile
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

from ..assets import LevelAsset
from ..assets.collision import spawn_clearance
from ..errors import LyraAssetsError
from .gltf import drop_degenerate_triangles, lod_attributes, plain_json, png_bytes, y_up_points

try:  # this module is imported only when USD is asked for
    from pxr import Gf, Kind, Sdf, Tf, Usd, UsdGeom, UsdPhysics, UsdShade, Vt
except ImportError as exc:
    raise LyraAssetsError("USD export needs usd-core: pip install 'lyra-assets[usd]' (or usd-core)") from exc

SUFFIXES = (".usdz", ".usdc")
GRAVITY_M_S2 = 9.81
PROVENANCE_KEY = "lyra_assets"


def write_usd(asset: LevelAsset, path: Path) -> dict[str, Any]:
    """Write `asset` to `path` (.usdz, or .usdc with a `<stem>_textures/` folder beside it); return a summary."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise LyraAssetsError(f"{path}: USD output must end in {' or '.join(SUFFIXES)}")
    if not asset.lods:
        raise ValueError(f"asset {asset.name!r} has no LOD levels to export")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Everything is made in a hidden sibling folder and renamed into place: a crash leaves no half file.
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        work = Path(tmp)
        if path.suffix == ".usdz":
            # Inside the package: the usual "textures/" and an ASCII layer name, whatever the asset is called.
            layer, textures = work / f"{_prim_name(asset.name)}.usdc", "textures"
        else:  # beside a .usdc, its textures are named after it, so two can share a folder
            layer, textures = work / path.name, f"{path.stem}_textures"
        summary = _write_stage(asset, layer, textures)
        if path.suffix == ".usdz":
            # Packed by hand with Sdf's zip writer rather than UsdUtils' packager, which renames the texture
            # folder and warns about its own renamed paths. The root layer goes first, as usdz requires.
            packed = work / path.name
            writer = Sdf.ZipFileWriter.CreateNew(str(packed))
            writer.AddFile(str(layer), layer.name)
            for image in sorted((work / textures).iterdir()):
                writer.AddFile(str(image), f"{textures}/{image.name}")
            writer.Save()
            packed.replace(path)
        else:
            (path.parent / textures).mkdir(exist_ok=True)
            for image in (work / textures).iterdir():
                image.replace(path.parent / textures / image.name)
            layer.replace(path)
    return {"path": str(path), "bytes": path.stat().st_size, **summary}


def _write_stage(asset: LevelAsset, layer_path: Path, textures: str) -> dict[str, Any]:
    stage = Usd.Stage.CreateNew(str(layer_path))
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.y)
    UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    UsdPhysics.SetStageKilogramsPerUnit(stage, 1.0)
    root_path = Sdf.Path.absoluteRootPath.AppendChild(_prim_name(asset.name))
    root = UsdGeom.Xform.Define(stage, root_path).GetPrim()
    stage.SetDefaultPrim(root)
    Usd.ModelAPI(root).SetKind(Kind.Tokens.component)
    provenance = _custom_data(asset.extras)
    root.SetCustomDataByKey(PROVENANCE_KEY, provenance)
    stage.GetRootLayer().customLayerData = {PROVENANCE_KEY: provenance}

    materials = _materials(stage, asset, root_path.AppendChild("Looks"), layer_path.parent, textures)
    triangles = _lod_variants(stage, root, asset, materials)
    collider_triangles = _collider(stage, root_path.AppendChild("collider"), asset)

    clearance = spawn_clearance(asset.collider)
    spawn = UsdGeom.Xform.Define(stage, root_path.AppendChild("spawn")).GetPrim()
    spawn.SetCustomDataByKey("clearance", {k: v for k, v in clearance.items() if v is not None})

    scene = UsdPhysics.Scene.Define(stage, "/PhysicsScene")
    scene.CreateGravityDirectionAttr(Gf.Vec3f(0.0, -1.0, 0.0))
    scene.CreateGravityMagnitudeAttr(GRAVITY_M_S2)
    stage.GetRootLayer().Save()
    return {"root": str(root_path), "triangles": triangles, "collider_triangles": collider_triangles,
            "materials": len(materials), "spawn": clearance}


def _lod_variants(stage, root, asset: LevelAsset, materials: dict[tuple[int, int], Any]) -> list[int]:
    """The variant set "LOD": variant LODk defines <root>/visual as level k. Returns triangles per level."""
    variants = root.GetVariantSets().AddVariantSet("LOD")
    triangles = []
    for level, lod in enumerate(asset.lods):
        name = f"LOD{level}"
        variants.AddVariant(name)
        variants.SetVariantSelection(name)
        with variants.GetVariantEditContext():
            faces = drop_degenerate_triangles(lod.faces, f"{asset.name}_{name}")
            attributes = lod_attributes(lod, f"{asset.name}_{name}")
            mesh = _mesh(stage, root.GetPath().AppendChild("visual"), attributes["POSITION"], faces)
            mesh.CreateNormalsAttr(Vt.Vec3fArray.FromNumpy(attributes["NORMAL"]))
            mesh.SetNormalsInterpolation(UsdGeom.Tokens.vertex)
            st = attributes["TEXCOORD_0"].copy()
            st[:, 1] = 1.0 - st[:, 1]
            UsdGeom.PrimvarsAPI(mesh).CreatePrimvar("st", Sdf.ValueTypeNames.TexCoord2fArray,
                                                    UsdGeom.Tokens.vertex).Set(Vt.Vec2fArray.FromNumpy(st))
            binding = UsdShade.MaterialBindingAPI.Apply(mesh.GetPrim())
            binding.Bind(materials[id(lod.albedo), id(lod.normal_map)])
            mesh.GetPrim().SetCustomDataByKey("screen_coverage", float(lod.screen_coverage))
            mesh.GetPrim().SetCustomDataByKey("geometric_error_m", float(lod.geometric_error))
        triangles.append(len(faces))
    variants.SetVariantSelection("LOD0")
    return triangles


def _collider(stage, path, asset: LevelAsset) -> int:
    """The collision proxy: a static triangle-mesh collider of purpose guide. Returns its triangles."""
    name = f"{asset.name}_collider"
    faces = drop_degenerate_triangles(asset.collider.faces, name)
    collider = _mesh(stage, path, y_up_points(asset.collider.vertices, name), faces)
    collider.CreatePurposeAttr(UsdGeom.Tokens.guide)
    UsdPhysics.CollisionAPI.Apply(collider.GetPrim())
    # The proxy is already a few thousand triangles: PhysX takes it as it is, no convex approximation.
    UsdPhysics.MeshCollisionAPI.Apply(collider.GetPrim()).CreateApproximationAttr(UsdPhysics.Tokens.none)
    return len(faces)


def _materials(stage, asset: LevelAsset, looks, folder: Path, textures: str) -> dict[tuple[int, int], Any]:
    """One Material per (albedo, normal map) pair, keyed by the arrays' identity as in the GLB: levels that
    share an atlas share its images and material."""
    UsdGeom.Scope.Define(stage, looks)
    (folder / textures).mkdir(exist_ok=True)
    files: dict[int, str] = {}
    materials: dict[tuple[int, int], Any] = {}

    def image(pixels: np.ndarray, label: str) -> str:
        if id(pixels) not in files:
            name = f"{textures}/{label}{len(files)}.png"
            (folder / name).write_bytes(png_bytes(pixels, label))
            files[id(pixels)] = name
        return files[id(pixels)]

    for lod in asset.lods:
        key = (id(lod.albedo), id(lod.normal_map))
        if key in materials:
            continue
        albedo, normal = image(lod.albedo, "albedo"), image(lod.normal_map, "normal")
        material = UsdShade.Material.Define(stage, looks.AppendChild(f"material{len(materials)}"))
        path = material.GetPath()
        reader = UsdShade.Shader.Define(stage, path.AppendChild("st_reader"))
        reader.CreateIdAttr("UsdPrimvarReader_float2")
        reader.CreateInput("varname", Sdf.ValueTypeNames.String).Set("st")
        st = reader.CreateOutput("result", Sdf.ValueTypeNames.Float2)
        surface = UsdShade.Shader.Define(stage, path.AppendChild("surface"))
        surface.CreateIdAttr("UsdPreviewSurface")
        # Baked, lighting-free albedo on a rough dielectric, as in the GLB.
        surface.CreateInput("roughness", Sdf.ValueTypeNames.Float).Set(1.0)
        surface.CreateInput("metallic", Sdf.ValueTypeNames.Float).Set(0.0)
        colour = _texture(stage, path.AppendChild("albedo"), albedo, st, "sRGB")
        surface.CreateInput("diffuseColor", Sdf.ValueTypeNames.Color3f).ConnectToSource(colour)
        # 8-bit normal maps are mapped from [0, 1] to [-1, 1] by the texture node, as UsdPreviewSurface asks.
        normals = _texture(stage, path.AppendChild("normal"), normal, st, "raw",
                           scale=(2.0, 2.0, 2.0, 1.0), bias=(-1.0, -1.0, -1.0, 0.0))
        surface.CreateInput("normal", Sdf.ValueTypeNames.Normal3f).ConnectToSource(normals)
        material.CreateSurfaceOutput().ConnectToSource(surface.ConnectableAPI(), "surface")
        materials[key] = material
    return materials


def _texture(stage, path, file: str, st, colour_space: str, scale=None, bias=None):
    """A UsdUVTexture reading `file` at the material's st; returns its rgb output."""
    texture = UsdShade.Shader.Define(stage, path)
    texture.CreateIdAttr("UsdUVTexture")
    texture.CreateInput("file", Sdf.ValueTypeNames.Asset).Set(Sdf.AssetPath(file))
    texture.CreateInput("st", Sdf.ValueTypeNames.Float2).ConnectToSource(st)
    texture.CreateInput("sourceColorSpace", Sdf.ValueTypeNames.Token).Set(colour_space)
    # Clamped, like the GLB's sampler: an atlas's edge texels must not bleed into the far side.
    texture.CreateInput("wrapS", Sdf.ValueTypeNames.Token).Set("clamp")
    texture.CreateInput("wrapT", Sdf.ValueTypeNames.Token).Set("clamp")
    if scale is not None:
        texture.CreateInput("scale", Sdf.ValueTypeNames.Float4).Set(Gf.Vec4f(*scale))
        texture.CreateInput("bias", Sdf.ValueTypeNames.Float4).Set(Gf.Vec4f(*bias))
    return texture.CreateOutput("rgb", Sdf.ValueTypeNames.Float3)


def _mesh(stage, path, points: np.ndarray, faces: np.ndarray):
    """A triangle Mesh with its extent; no subdivision (these are final, game-ready triangles)."""
    mesh = UsdGeom.Mesh.Define(stage, path)
    mesh.CreatePointsAttr(Vt.Vec3fArray.FromNumpy(np.ascontiguousarray(points, np.float32)))
    mesh.CreateFaceVertexCountsAttr(Vt.IntArray.FromNumpy(np.full(len(faces), 3, np.int32)))
    mesh.CreateFaceVertexIndicesAttr(Vt.IntArray.FromNumpy(np.ascontiguousarray(faces, np.int32).ravel()))
    mesh.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)
    mesh.CreateDoubleSidedAttr(False)
    used = points[np.unique(faces)]
    mesh.CreateExtentAttr(Vt.Vec3fArray.FromNumpy(np.stack([used.min(axis=0), used.max(axis=0)]).astype(np.float32)))
    return mesh


def _custom_data(extras: dict[str, Any]) -> dict[str, Any]:
    """The asset's extras as USD customData: plain values, with unknowns (None) left out."""
    plain = plain_json(extras)
    return {k: (_custom_data(v) if isinstance(v, dict) else v) for k, v in plain.items() if v is not None}


def _prim_name(name: str) -> str:
    """The asset's name as a prim name simulators and ARKit all read: ASCII letters, digits and _, not
    starting with a digit ("Façade été" -> "Facade_ete")."""
    return Tf.MakeValidIdentifier(unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode())

