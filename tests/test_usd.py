"""USD export: every file passes usd-core's compliance checker (ARKit rules), and the stage read back with pxr
has the units, axes, LOD variants, textures, physics collider and spawn clearance the asset says it has.

Two assets: test_export's synthetic room (every expected value known) and a tiny real build of the example.
"""
from __future__ import annotations

import io
import json
import sys
import warnings

import clients
import numpy as np
import pybullet
import pytest
from click.testing import CliRunner
from PIL import Image
from pxr import Ar, Usd, UsdGeom, UsdPhysics, UsdShade, UsdUtils, UsdValidation  # usd-core: in the test extra
from test_export import EXTRAS, ROOM_MAX, ROOM_MIN, make_asset

from lyra_assets.assets.collision import ray_distance
from lyra_assets.cli import main
from lyra_assets.errors import LyraAssetsError
from lyra_assets.export.usd import write_usd

EYE_HEIGHT_M = 1.6  # the synthetic room's floor and the layout generator's, below the first camera


def compliance(path) -> tuple[list[str], list[str], list[str]]:
    """usd-core's ComplianceChecker with the ARKit rules: (errors, failed checks, warnings)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # usd-core 25+ deprecates it; ARKit rules live here
        checker = UsdUtils.ComplianceChecker(arkit=True)
    checker.CheckCompliance(str(path))
    return checker.GetErrors(), checker.GetFailedChecks(), checker.GetWarnings()


def validation(path) -> list[str]:
    """usd-core's newer validators: all registered ones (core, geometry, shading, usdz packaging, physics)."""
    context = UsdValidation.ValidationContext(UsdValidation.ValidationRegistry().GetOrLoadAllValidators())
    return [error.GetMessage() for error in context.Validate(Usd.Stage.Open(str(path)))]


@pytest.fixture(scope="module", params=[".usdz", ".usdc"])
def written(request, tmp_path_factory):
    asset = make_asset()
    path = tmp_path_factory.mktemp("usd") / f"atrium{request.param}"
    return asset, path, write_usd(asset, path)


def _variant_meshes(stage: Usd.Stage, root: Usd.Prim):
    """(variant name, the visual Mesh it selects) for every LOD variant, in order; each pair is valid until
    the next one is asked for (it selects the next variant)."""
    variants = root.GetVariantSet("LOD")
    for name in variants.GetVariantNames():
        variants.SetVariantSelection(name)
        yield name, UsdGeom.Mesh(stage.GetPrimAtPath(root.GetPath().AppendChild("visual")))


def _texture_pixels(shader: UsdShade.Shader) -> np.ndarray:
    """The image a UsdUVTexture reads, resolved and opened through USD's own asset resolver."""
    asset = shader.GetInput("file").Get()
    assert asset.resolvedPath, f"{asset.path} does not resolve"
    data = Ar.GetResolver().OpenAsset(Ar.ResolvedPath(asset.resolvedPath)).GetBuffer()
    return np.asarray(Image.open(io.BytesIO(bytes(data))).convert("RGB"))


def _floor_below(stage: Usd.Stage, root: Usd.Prim) -> float | None:
    """A ray straight down (USD -Y) from the spawn prim, against the collider, all in stage coordinates."""
    cache = UsdGeom.XformCache()
    spawn = cache.GetLocalToWorldTransform(stage.GetPrimAtPath(root.GetPath().AppendChild("spawn")))
    collider = stage.GetPrimAtPath(root.GetPath().AppendChild("collider"))
    to_world = np.array(cache.GetLocalToWorldTransform(collider))
    points = np.array(UsdGeom.Mesh(collider).GetPointsAttr().Get(), np.float64)
    points = np.c_[points, np.ones(len(points))] @ to_world  # USD matrices act on row vectors
    faces = np.array(UsdGeom.Mesh(collider).GetFaceVertexIndicesAttr().Get()).reshape(-1, 3)
    hit = ray_distance(points[:, :3], faces, np.array(spawn.ExtractTranslation()), [0.0, -1.0, 0.0])
    return None if hit is None else hit[0]


def test_compliance_checker_arkit_rules_pass(written):
    errors, failed, warned = compliance(written[1])
    assert errors == [] and failed == [] and warned == []


def test_compliance_checker_is_live(written, tmp_path):
    """The same check fails a copy that breaks two rules: Z up, and a texture format ARKit cannot read."""
    stage = Usd.Stage.Open(str(written[1]))
    broken = tmp_path / "broken.usda"
    stage.Export(str(broken))
    stage = Usd.Stage.Open(str(broken))
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.z)
    UsdShade.Shader(stage.GetPrimAtPath("/atrium/Looks/material0/albedo")).GetInput("file").Set("albedo.tga")
    stage.Save()
    _, failed, _ = compliance(broken)
    assert any("upAxis 'Z'" in f for f in failed) and any("albedo.tga" in f for f in failed)


def test_validation_framework_reports_nothing(written):
    assert validation(written[1]) == []


def test_stage_units_axes_and_provenance(written):
    asset, path, summary = written
    stage = Usd.Stage.Open(str(path))
    assert UsdGeom.GetStageMetersPerUnit(stage) == 1.0 and UsdGeom.GetStageUpAxis(stage) == UsdGeom.Tokens.y
    assert UsdPhysics.GetStageKilogramsPerUnit(stage) == 1.0
    root = stage.GetDefaultPrim()
    assert root.GetPath() == "/atrium" == summary["root"] and Usd.ModelAPI(root).GetKind() == "component"
    assert dict(root.GetCustomDataByKey("lyra_assets")) == EXTRAS
    assert dict(stage.GetRootLayer().customLayerData["lyra_assets"]) == EXTRAS


def test_lod_variants_match_the_asset(written):
    asset, path, summary = written
    stage = Usd.Stage.Open(str(path))
    root = stage.GetDefaultPrim()
    assert root.GetVariantSets().GetNames() == ["LOD"]
    assert root.GetVariantSet("LOD").GetVariantSelection() == "LOD0"
    assert root.GetVariantSet("LOD").GetVariantNames() == [f"LOD{i}" for i in range(len(asset.lods))]
    # LOD2 carries a triangle that repeats a vertex: it draws nothing and is left out, as in the GLB.
    expected = [len(lod.faces) for lod in asset.lods]
    expected[2] -= 1
    for (name, mesh), lod, triangles in zip(_variant_meshes(stage, root), asset.lods, expected, strict=True):
        counts = np.array(mesh.GetFaceVertexCountsAttr().Get())
        assert len(counts) == triangles and (counts == 3).all(), name
        # Y up, metres: OpenCV (x, y, z) is USD (x, -y, -z); st = (u, 1 - v), USD's origin is bottom left.
        points = np.array(mesh.GetPointsAttr().Get())
        np.testing.assert_allclose(points, lod.vertices * [1, -1, -1], atol=1e-6)
        st = np.array(UsdGeom.PrimvarsAPI(mesh).GetPrimvar("st").Get())
        np.testing.assert_allclose(st, np.c_[lod.uv[:, 0], 1 - lod.uv[:, 1]], atol=1e-6)
        assert mesh.GetSubdivisionSchemeAttr().Get() == "none" and mesh.ComputePurpose() == "default"
    assert summary["triangles"] == expected


def test_materials_read_the_baked_textures(written):
    asset, path, _ = written
    stage = Usd.Stage.Open(str(path))
    root = stage.GetDefaultPrim()
    for (name, mesh), lod in zip(_variant_meshes(stage, root), asset.lods):
        material, _ = UsdShade.MaterialBindingAPI(mesh).ComputeBoundMaterial()
        surface = material.ComputeSurfaceSource()[0]
        assert surface.GetShaderId() == "UsdPreviewSurface", name
        albedo = UsdShade.Shader(surface.GetInput("diffuseColor").GetConnectedSource()[0])
        normal = UsdShade.Shader(surface.GetInput("normal").GetConnectedSource()[0])
        assert albedo.GetInput("sourceColorSpace").Get() == "sRGB"
        assert normal.GetInput("sourceColorSpace").Get() == "raw"
        assert (_texture_pixels(albedo) == lod.albedo).all() and (_texture_pixels(normal) == lod.normal_map).all()
        reader = UsdShade.Shader(albedo.GetInput("st").GetConnectedSource()[0])
        assert reader.GetShaderId() == "UsdPrimvarReader_float2" and reader.GetInput("varname").Get() == "st"


def test_collider_is_a_static_physics_mesh_never_rendered(written):
    asset, path, summary = written
    stage = Usd.Stage.Open(str(path))
    collider = stage.GetPrimAtPath("/atrium/collider")
    assert collider.IsA(UsdGeom.Mesh) and UsdGeom.Imageable(collider).ComputePurpose() == UsdGeom.Tokens.guide
    assert collider.HasAPI(UsdPhysics.CollisionAPI) and collider.HasAPI(UsdPhysics.MeshCollisionAPI)
    assert UsdPhysics.MeshCollisionAPI(collider).GetApproximationAttr().Get() == UsdPhysics.Tokens.none
    assert not collider.HasAPI(UsdPhysics.RigidBodyAPI)  # static: the level does not move
    assert not UsdShade.MaterialBindingAPI(collider).GetDirectBindingRel().GetTargets()
    assert len(UsdGeom.Mesh(collider).GetFaceVertexCountsAttr().Get()) == len(asset.collider.faces)
    # As a simulator reads it: USD Physics' own parser finds one static triangle-mesh shape and gravity along
    # -Y, on a scene outside the defaultPrim (a stage that references the asset keeps its own scene).
    load = getattr(UsdPhysics, "UsdPhysicsLoadStageFromPrimRange", None) or UsdPhysics.LoadUsdPhysicsFromRange
    parsed = load(stage, ["/"])
    assert set(parsed) == {UsdPhysics.ObjectType.MeshShape, UsdPhysics.ObjectType.Scene}
    (paths, (shape,)) = parsed[UsdPhysics.ObjectType.MeshShape]
    assert paths == ["/atrium/collider"] and shape.isValid and shape.collisionEnabled
    assert shape.approximation == "none" and shape.rigidBody.isEmpty  # static: no body owns it
    (paths, (scene,)) = parsed[UsdPhysics.ObjectType.Scene]
    assert paths == ["/PhysicsScene"] and tuple(scene.gravityDirection) == (0, -1, 0)
    assert scene.gravityMagnitude == pytest.approx(9.81)


def test_spawn_stands_on_the_collider_at_eye_height(written):
    _, path, summary = written
    stage = Usd.Stage.Open(str(path))
    root = stage.GetDefaultPrim()
    assert _floor_below(stage, root) == pytest.approx(EYE_HEIGHT_M, rel=0.01)
    clearance = dict(stage.GetPrimAtPath("/atrium/spawn").GetCustomDataByKey("clearance"))
    assert clearance == summary["spawn"] == {"floor_distance_m": 1.6, "floor_slope_deg": 0.0,
                                             "ceiling_distance_m": 1.2, "ceiling_from": "ray",
                                             "free_height_m": 2.8}


def test_blender_imports_the_usd_where_it_imports_the_glb(written):
    """A second USD reader: Blender's importer puts the level where it puts the GLB (Z up, metres), with the
    baked textures, and leaves the guide-purpose collider out unless asked for guides."""
    asset, path, _ = written
    scene = clients.blender_import(path)
    assert scene["result"] == ["FINISHED"]
    objects = {o["name"]: o for o in scene["objects"]}
    assert "collider" not in objects and objects["visual"]["parent"] == "atrium"
    assert objects["visual"]["triangles"] == len(asset.lods[0].faces)
    # As in test_export: OpenCV (x, y, z) lands at Blender (x, z, -y), the floor 1.6 m below the camera.
    lo, hi = objects["visual"]["bounds"]
    assert lo == pytest.approx([ROOM_MIN[0], ROOM_MIN[2], -ROOM_MAX[1]], abs=1e-5)
    assert hi == pytest.approx([ROOM_MAX[0], ROOM_MAX[2], -ROOM_MIN[1]], abs=1e-5)
    images = {i["name"]: i for i in scene["images"]}
    (material,) = objects["visual"]["materials"]
    used = next(m for m in scene["materials"] if m["name"] == material)["images"]
    assert sorted(images[i]["colorspace"] for i in used) == ["Non-Color", "sRGB"]
    assert all(images[i]["width"] == 64 for i in used)  # decoded: the pixels were found

    with_guides = {o["name"]: o for o in clients.blender_import(path, guides=True)["objects"]}
    assert with_guides["collider"]["triangles"] == len(asset.collider.faces)
    assert with_guides["collider"]["materials"] == []


def test_usdc_keeps_its_textures_beside_it(tmp_path):
    path = tmp_path / "atrium.usdc"
    write_usd(make_asset(), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atrium.usdc", "atrium_textures"]
    assert all(p.suffix == ".png" for p in (tmp_path / "atrium_textures").iterdir())


def test_a_non_ascii_name_becomes_a_plain_prim_name(tmp_path):
    """Output names may be any Unicode (a drop folder keeps them); prim and package file names stay ASCII."""
    asset = make_asset()
    asset.name = "Façade_été_日本"
    path = tmp_path / f"{asset.name}.usdz"
    assert write_usd(asset, path)["root"] == "/Facade_ete_"
    assert Usd.Stage.Open(str(path)).GetDefaultPrim().GetPath() == "/Facade_ete_"
    assert compliance(path) == ([], [], [])


def test_unknown_suffix_is_refused(tmp_path):
    with pytest.raises(LyraAssetsError, match="must end in .usdz or .usdc"):
        write_usd(make_asset(), tmp_path / "atrium.obj")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def real_build(tmp_path_factory, example_image):
    """The example corridor, tiny: five frames, LOD0 of 4000 triangles, 256-texel atlas."""
    out = tmp_path_factory.mktemp("build")
    args = ["--json-progress", "build", str(example_image), "-o", str(out), "--frames", "5",
            "--lod0-triangles", "4000", "--texture-size", "256", "--format", "usd"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    outputs = json.loads(result.stdout.splitlines()[-1])["outputs"]
    return outputs, json.loads((out / "corridor" / "manifest.json").read_text())


def test_real_build_writes_a_compliant_usdz_next_to_the_glb(real_build):
    outputs, manifest = real_build
    assert outputs["usd"].endswith("corridor/corridor.usdz") and outputs["glb"].endswith("corridor/corridor.glb")
    assert manifest["outputs"]["usd"]["file"] == "corridor.usdz"
    errors, failed, warned = compliance(outputs["usd"])
    assert errors == [] and failed == [] and warned == [] and validation(outputs["usd"]) == []
    stage = Usd.Stage.Open(outputs["usd"])
    root = stage.GetDefaultPrim()
    triangles = [len(mesh.GetFaceVertexCountsAttr().Get()) for _, mesh in _variant_meshes(stage, root)]
    assert triangles == [lod["triangles"] for lod in manifest["lods"]]
    assert dict(root.GetCustomDataByKey("lyra_assets"))["job_key"] == manifest["job_key"]


def test_real_build_spawn_has_floor_at_eye_height(real_build):
    """The first camera sees neither the floor under it nor the ceiling over it; the collider has floor there
    all the same, the manifest says so, and the free height is the room's (the generator's box room)."""
    outputs, manifest = real_build
    stage = Usd.Stage.Open(outputs["usd"])
    below = _floor_below(stage, stage.GetDefaultPrim())
    assert below == pytest.approx(EYE_HEIGHT_M, rel=0.1)
    spawn, room = manifest["spawn"], manifest["generator"]["layout"]
    assert spawn["floor_distance_m"] == pytest.approx(below, abs=1e-3) and spawn["floor_slope_deg"] < 5
    # The floor under the first camera was in no view: the asset stage laid it (drawn and collided with).
    assert spawn["floor_patch_m2"] > 0
    assert spawn["ceiling_from"] == "level ceiling"
    assert spawn["free_height_m"] == pytest.approx(room["room_max_m"][1] - room["room_min_m"][1], rel=0.05)


def _bullet_world(usd: str) -> int:
    """A Bullet world from the USD alone: its collider as a static triangle mesh, its scene's gravity."""
    stage = Usd.Stage.Open(usd)
    collider = UsdGeom.Mesh(stage.GetPrimAtPath(stage.GetDefaultPrim().GetPath().AppendChild("collider")))
    scene = UsdPhysics.Scene(stage.GetPrimAtPath("/PhysicsScene"))
    world = pybullet.connect(pybullet.DIRECT)
    gravity = np.array(scene.GetGravityDirectionAttr().Get()) * scene.GetGravityMagnitudeAttr().Get()
    pybullet.setGravity(*gravity, physicsClientId=world)
    level = pybullet.createCollisionShape(
        pybullet.GEOM_MESH, vertices=np.array(collider.GetPointsAttr().Get(), np.float64).tolist(),
        indices=list(collider.GetFaceVertexIndicesAttr().Get()), flags=pybullet.GEOM_FORCE_CONCAVE_TRIMESH,
        physicsClientId=world)
    pybullet.createMultiBody(0, level, physicsClientId=world)  # mass 0: static, like the USD's collider
    return world


def _ball(world: int, position, radius: float = 0.2) -> int:
    shape = pybullet.createCollisionShape(pybullet.GEOM_SPHERE, radius=radius, physicsClientId=world)
    return pybullet.createMultiBody(1.0, shape, basePosition=list(position), physicsClientId=world)


def _run(world: int, seconds: float) -> None:
    for _ in range(round(seconds * 240)):  # Bullet's default step: 1/240 s
        pybullet.stepSimulation(physicsClientId=world)


def test_a_body_dropped_at_the_spawn_lands_on_the_floor_in_bullet(real_build):
    """A 0.2 m ball let go at the spawn comes to rest on the floor, then rolls 3 m along the path (the
    spawn's forward, -Z) without falling through."""
    outputs, manifest = real_build
    world = _bullet_world(outputs["usd"])
    try:
        radius = 0.2
        ball = _ball(world, [0, 0, 0], radius)
        _run(world, 2.0)
        rest = np.array(pybullet.getBasePositionAndOrientation(ball, physicsClientId=world)[0])
        floor = manifest["spawn"]["floor_distance_m"]
        assert rest[1] == pytest.approx(-floor + radius, abs=0.01)
        assert np.linalg.norm(pybullet.getBaseVelocity(ball, physicsClientId=world)[0]) < 1e-3
        pybullet.resetBaseVelocity(ball, [0, 0, -2.0], physicsClientId=world)
        _run(world, 3.0)
        rolled = np.array(pybullet.getBasePositionAndOrientation(ball, physicsClientId=world)[0])
        assert rolled[2] < -3.0 and rolled[1] == pytest.approx(rest[1], abs=0.02)
    finally:
        pybullet.disconnect(world)


def test_balls_set_down_around_the_spawn_stay_put_in_bullet(real_build):
    """The floor around the spawn is flat, and its collider behaves so: 0.2 m balls set down 1 cm above it
    anywhere within half a metre of the spawn stay where they are. (Simplification leaves a flat floor as
    fans of slivers, whose edges tip a ball landing beside them; Bullet has no rolling friction, so it would
    roll on for ever.)"""
    outputs, manifest = real_build
    radius, floor = 0.2, manifest["spawn"]["floor_distance_m"]
    spots = [(x, z) for x in np.linspace(-0.5, 0.5, 6) for z in np.linspace(-0.5, 0.5, 6)]
    rolling = []
    for x, z in spots:
        world = _bullet_world(outputs["usd"])
        try:
            ball = _ball(world, [x, -floor + radius + 0.01, z], radius)
            _run(world, 2.0)
            if np.linalg.norm(pybullet.getBaseVelocity(ball, physicsClientId=world)[0]) > 1e-3:
                rolling.append((x, z))
        finally:
            pybullet.disconnect(world)
    assert rolling == []


def test_unknown_format_is_refused(tmp_path, example_image):
    result = CliRunner().invoke(main, ["build", str(example_image), "-o", str(tmp_path), "--format", "fbx"])
    assert result.exit_code == 2 and "fbx" in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_sidecar_asks_for_usd_next_to_the_glb(small_sidecar):
    """`[export] formats` in any settings layer; the GLB is always among them (every surface reads it)."""
    from lyra_assets.job import resolve_job

    small_sidecar.with_suffix(".toml").write_text('[export]\nformats = ["usd"]\n')
    assert resolve_job(small_sidecar).export.formats == ("glb", "usd")


def test_missing_usd_core_is_reported_before_any_work(monkeypatch, tmp_path, example_image):
    monkeypatch.setitem(sys.modules, "pxr", None)  # as if usd-core were not installed
    monkeypatch.delitem(sys.modules, "lyra_assets.export.usd")
    monkeypatch.delattr("lyra_assets.export.usd")
    result = CliRunner().invoke(main, ["build", str(example_image), "-o", str(tmp_path), "--format", "usd"])
    assert result.exit_code == 2 and "pip install 'lyra-assets[usd]'" in result.output
    assert list(tmp_path.iterdir()) == []
