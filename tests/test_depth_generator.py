"""The learned-depth generator: real ONNX / diffusers loading paths on tiny models made here, metric scale,
the spatial memory against ground truth, and its bad-input errors.

No real weights are on these machines. The models here are built in the test: a tiny ONNX graph in
Depth-Anything V2's export layout (it says "the lower half is a floor receding to a horizon at mid-height"),
tiny random diffusers pipelines saved to a folder, and a labelled test double that returns the true depth of
a ray-cast box scene (tests/scenes.py), which is what the ground-truth contract needs.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from scenes import BoxScene

from lyra_assets.cli import main
from lyra_assets.errors import LyraAssetsError
from lyra_assets.generators.depth import DepthGenerator, fit_affine, ground_depth
from lyra_assets.generators.depth_models import RelativeDepth
from lyra_assets.images import ConceptImage
from lyra_assets.motions import FreeSpace, camera_path
from lyra_assets.presets import load_preset
from lyra_assets.progress import silent
from lyra_assets.trajectory import CameraPath, intrinsics_from_fov, pixel_rays

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
W, H = 96, 64  # frames and concept image: tiny


def floor_onnx(path: Path, output_shape: str = "nhw", fixed: tuple[int, int] | None = None) -> Path:
    """A Depth-Anything-V2-layout ONNX graph (pixel_values N x 3 x H x W -> predicted_depth N x H x W):
    relative inverse depth rising linearly below the middle row (a floor) and small above it (far).
    output_shape "n2hw" gives a wrong N x 2 x H x W output, as a model that is not a depth model would."""
    from onnx import TensorProto, helper

    h, w = fixed or ("height", "width")
    nodes = [
        helper.make_node("ReduceMean", ["pixel_values"], ["grey"], axes=[1], keepdims=1),  # N x 1 x H x W
        helper.make_node("Mul", ["grey", "zero"], ["nothing"]),
        helper.make_node("Add", ["nothing", "one"], ["ones"]),
        helper.make_node("CumSum", ["ones", "axis_h"], ["rows"]),  # 1, 2, ... H down the image
        helper.make_node("ReduceMax", ["rows"], ["height_"], keepdims=1),
        helper.make_node("Mul", ["height_", "half"], ["horizon"]),
        helper.make_node("Sub", ["rows", "horizon"], ["below"]),
        helper.make_node("Relu", ["below"], ["floor"]),
        helper.make_node("Mul", ["height_", "far"], ["sky"]),
        helper.make_node("Add", ["floor", "sky"], ["disparity"]),
    ]
    if output_shape == "nhw":
        nodes.append(helper.make_node("Squeeze", ["disparity", "axis_c"], ["predicted_depth"]))
        out = helper.make_tensor_value_info("predicted_depth", TensorProto.FLOAT, ["batch", h, w])
    else:
        nodes.append(helper.make_node("Concat", ["disparity", "disparity"], ["predicted_depth"], axis=1))
        out = helper.make_tensor_value_info("predicted_depth", TensorProto.FLOAT, ["batch", 2, h, w])
    consts = [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
              helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
              helper.make_tensor("half", TensorProto.FLOAT, [], [0.5]),
              helper.make_tensor("far", TensorProto.FLOAT, [], [0.02]),
              helper.make_tensor("axis_h", TensorProto.INT64, [], [2]),
              helper.make_tensor("axis_c", TensorProto.INT64, [1], [1])]
    graph = helper.make_graph(
        nodes, "floor_depth",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, h, w])], [out],
        initializer=consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def concept(tmp_path: Path, name: str = "hall") -> Path:
    """A concept image with some texture: a lighter floor below a darker wall."""
    rows = np.linspace(0, 1, H)[:, None, None]
    cols = np.linspace(0, 1, W)[None, :, None]
    pixels = 80 + 120 * rows * np.array([1.0, 0.8, 0.6]) + 30 * np.sin(12 * cols) * np.array([0.5, 1.0, 0.2])
    file = tmp_path / f"{name}.png"
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(file)
    return file


def tiny_preset(name: str = "walk_forward", frames: int = 7, hfov: float = 60.0):
    return load_preset(name, None, {"camera": {"width": W, "height": H, "hfov_deg": hfov},
                                    "path": {"frames": frames}})


# -- the ONNX path ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fixed", [None, (70, 98)])
def test_onnx_model_metric_scale_from_the_floor(tmp_path, fixed):
    """Dynamic and fixed input sizes; the floor's depth comes out in metres for the preset's eye height."""
    model = floor_onnx(tmp_path / "model.onnx", fixed=fixed)
    preset = tiny_preset()
    generator = DepthGenerator(preset, {"model": str(model), "licence": "test licence"}, "test")
    image = ConceptImage(np.full((H, W, 3), 128, np.uint8), "grey", "0" * 64)
    generator.survey(image)
    lifted = generator._lift(image)
    assert lifted.fit["method"] == "ground plane" and lifted.fit["inlier_fraction"] > 0.25
    K = intrinsics_from_fov(60.0, W, H)
    rays = pixel_rays(K, W, H)
    floor = rays[..., 1] > 0.08  # well below the horizon row, where the model says floor
    truth = 1.6 / rays[..., 1][floor]
    assert np.median(np.abs(lifted.depth[floor] / truth - 1)) < 0.03
    assert generator.licence == "test licence" and generator.notice is None


def test_cli_builds_a_valid_glb_from_a_sidecar_onnx(tmp_path):
    """`[depth] model = "x.onnx"` in a sidecar: the whole build, and the Khronos validator passes it."""
    from clients import validate

    model = floor_onnx(tmp_path / "x.onnx")
    image = concept(tmp_path)
    image.with_suffix(".toml").write_text(
        f'generator = "depth"\n[camera]\nwidth = {W}\nheight = {H}\n[path]\nframes = 6\n'
        f'[depth]\nmodel = "{model}"\nlicence = "Apache-2.0 (test)"\n')
    out = tmp_path / "out"
    run = CliRunner().invoke(main, ["build", str(image), "-o", str(out), "--lod0-triangles", "3000",
                                    "--texture-size", "512", "--lods", "2"])
    assert run.exit_code == 0, run.output
    glb = out / "hall" / "hall.glb"
    report = validate(glb)
    assert report["issues"]["numErrors"] == 0 and report["issues"]["numWarnings"] == 0, report["issues"]
    manifest = json.loads((out / "hall" / "manifest.json").read_text())
    assert manifest["generator"]["name"] == "depth" and manifest["generator"]["licence"] == "Apache-2.0 (test)"
    walk = json.loads((out / "hall" / "walkthrough" / "manifest.json").read_text())
    frames = walk["generator"]["depth"]["frames"]
    assert len(frames) == 6 and frames[0]["generated"] < 0.01  # the first view is the concept image itself
    assert all(abs(f["generated"] + f["remembered"] - 1) < 1e-4 for f in frames)


def test_depth_model_option(tmp_path):
    """--depth-model puts the model into the [depth] settings and means -g depth; the walkthrough alone is
    written."""
    model = floor_onnx(tmp_path / "m.onnx")
    image = concept(tmp_path)
    run = CliRunner().invoke(main, ["generate", str(image), "-g", "layout", "--depth-model", str(model)])
    assert run.exit_code == 2 and "--depth-model is for -g depth" in run.output
    run = CliRunner().invoke(main, ["generate", str(image), "--depth-model", str(model),
                                    "--frames", "3", "-o", str(tmp_path / "out")])
    assert run.exit_code == 0, run.output
    assert (tmp_path / "out" / "hall" / "walkthrough" / "manifest.json").is_file()


# -- bad input ----------------------------------------------------------------------------------------------


def _refused(tmp_path: Path, extra: list[str], words: list[str]) -> None:
    image = concept(tmp_path)
    out = tmp_path / "out"
    run = CliRunner().invoke(main, ["build", str(image), "-g", "depth", "--frames", "3", "-o", str(out), *extra])
    assert run.exit_code == 2, run.output
    lines = [line for line in run.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), run.output
    for word in words:
        assert word in lines[0], lines[0]
    assert not out.exists()


def test_no_model_names_what_to_download(tmp_path):
    _refused(tmp_path, [], ["Depth-Anything-V2-Small", "ONNX", "99 MB", "[depth] model"])
    _refused(tmp_path, ["--depth-model", str(tmp_path / "missing.onnx")], ["missing.onnx", "not found"])


def test_onnx_with_wrong_output_shape(tmp_path):
    model = floor_onnx(tmp_path / "two.onnx", output_shape="n2hw")
    _refused(tmp_path, ["--depth-model", str(model)], ["two.onnx", "N x H x W"])


def test_unknown_depth_setting_names_the_table(tmp_path):
    image = concept(tmp_path)
    image.with_suffix(".toml").write_text('[depth]\nmodle = "x.onnx"\n')
    run = CliRunner().invoke(main, ["build", str(image), "-g", "depth", "-o", str(tmp_path / "out")])
    assert run.exit_code == 2 and "[depth]" in run.output and "modle" in run.output
    assert not (tmp_path / "out").exists()


def test_robust_fit_ignores_what_is_not_floor():
    rng = np.random.default_rng(1)
    model = rng.uniform(0.1, 1.0, 500)
    target = 2.0 * model + 0.3
    target[:150] = rng.uniform(0.1, 3.0, 150)  # a box standing on the floor: 30 % outliers
    a, b, inliers = fit_affine(model, target)
    assert abs(a - 2.0) < 0.01 and abs(b - 0.3) < 0.01 and 0.69 < inliers < 0.8  # a few outliers lie near the line


# -- ground truth: the spatial memory ----------------------------------------------------------------------


class TrueDepth:
    """TEST DOUBLE, labelled as such: returns the true depth of the box scene at the camera it is given
    (a perfect depth model), so what is measured is the memory, the metric fit and the fill."""

    description = "test double: true depth of tests/scenes.py BoxScene"

    def __init__(self, scene: BoxScene) -> None:
        self.scene = scene

    def __call__(self, rgb: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> RelativeDepth:
        h, w = rgb.shape[:2]
        dirs = pixel_rays(K, w, h) @ c2w[:3, :3].T
        return RelativeDepth(self.scene.raycast(np.broadcast_to(c2w[:3, 3], dirs.shape), dirs).astype(np.float32),
                             "depth")


class PaintedScene(BoxScene):
    """The box scene with colour at the scale of painted walls (periods of metres), so that a 96-pixel frame
    samples it without aliasing and PSNR measures the memory, not the test image's moiré."""

    def colour(self, points: np.ndarray) -> np.ndarray:
        return super().colour(points / 3.0)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def _true_walk(preset_name: str, frames: int):
    scene = PaintedScene()
    preset = tiny_preset(preset_name, frames)
    first = CameraPath(np.eye(4)[None], intrinsics_from_fov(60.0, W, H), W, H)
    image = ConceptImage(scene.render(first).frames[0], "box", "1" * 64)
    generator = DepthGenerator(preset, {}, "test", depth_model=TrueDepth(scene))
    path, _ = camera_path(preset, generator.survey(image))
    return scene, path, generator.generate(image, path, silent)


def test_ground_truth_walk_forward():
    scene, path, walk = _true_walk("walk_forward", 7)
    truth = scene.render(path)
    assert path.centres[-1, 2] > 1.0  # it really walked
    np.testing.assert_array_equal(walk.frames[0], walk.input_image)  # the memory renders its own view back exactly
    known = walk.depth > 0
    assert np.median(np.abs(walk.depth[known] / truth.depth[known] - 1)) < 0.02
    for i in range(1, len(path)):  # novel views, on the pixels remembered from the concept image
        seen = walk.observed[i]
        assert seen.mean() > 0.5
        assert psnr(walk.frames[i][seen], truth.frames[i][seen]) >= 25.0, i
    info = walk.info["generator"]["depth"]
    assert info["metric_fit"]["method"] == "ground plane" and abs(info["metric_fit"]["scale"] - 1) < 0.01
    assert info["frames"][0]["generated"] == 0.0


def test_ground_truth_revisit_renders_from_memory():
    _, path, walk = _true_walk("walk_and_return", 9)
    n = len(path)
    for i in range(n // 2):
        np.testing.assert_allclose(path.c2w[i], path.c2w[n - 1 - i])
        assert psnr(walk.frames[n - 1 - i], walk.frames[i]) >= 45.0, i
        assert walk.info["generator"]["depth"]["frames"][n - 1 - i]["generated"] == 0.0


def test_memory_continues_an_existing_walkthrough():
    """`memory`: a walkthrough to continue from; its poses render as they did, nothing is generated there."""
    scene, path, walk = _true_walk("walk_forward", 5)
    generator = DepthGenerator(tiny_preset(), {}, "test", depth_model=TrueDepth(scene))
    image = ConceptImage(walk.input_image, "box", "1" * 64)
    back = CameraPath(path.c2w[::-1].copy(), path.K, W, H)
    again = generator.generate(image, back, silent, memory=walk)
    for i in range(len(path)):
        assert psnr(again.frames[len(path) - 1 - i], walk.frames[i]) >= 45.0
    assert again.info["generator"]["depth"]["generated_mean"] == 0.0


# -- diffusers: tiny random pipelines saved to a folder, loaded as a user's folder is -----------------------


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory) -> dict[str, Path]:
    """A tiny random MarigoldDepthPipeline and StableDiffusionInpaintPipeline (two-block VAE and UNet,
    one-layer CLIP text encoder with a three-word vocabulary), saved with save_pretrained."""
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        MarigoldDepthPipeline,
        StableDiffusionInpaintPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    root = tmp_path_factory.mktemp("pipelines")
    (root / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2}))
    (root / "merges.txt").write_text("#version: 0.2\n")
    torch.manual_seed(0)
    tokenizer = CLIPTokenizer(str(root / "vocab.json"), str(root / "merges.txt"), model_max_length=77)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=3, hidden_size=16, intermediate_size=32,
                                                num_attention_heads=2, num_hidden_layers=1, projection_dim=16))

    def unet(in_channels: int) -> UNet2DConditionModel:
        return UNet2DConditionModel(sample_size=8, in_channels=in_channels, out_channels=4, layers_per_block=1,
                                    block_out_channels=(8, 16), norm_num_groups=8, cross_attention_dim=16,
                                    attention_head_dim=2, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))

    def vae() -> AutoencoderKL:
        return AutoencoderKL(block_out_channels=(8, 8), norm_num_groups=8, latent_channels=4,
                             down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)

    MarigoldDepthPipeline(unet=unet(8), vae=vae(), scheduler=DDIMScheduler(steps_offset=1), text_encoder=text_encoder,
                          tokenizer=tokenizer, prediction_type="depth", scale_invariant=True, shift_invariant=True,
                          default_denoising_steps=1, default_processing_resolution=32
                          ).save_pretrained(root / "marigold")
    StableDiffusionInpaintPipeline(vae=vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet(9),
                                   scheduler=DDIMScheduler(steps_offset=1), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False).save_pretrained(root / "inpaint")
    return {"marigold": root / "marigold", "inpaint": root / "inpaint"}


def test_marigold_folder_and_inpainting_folder_run_a_walk(pipelines, tmp_path):
    """The tiny Marigold gives random depth, so the metric scale comes from two known depths; the tiny
    inpainting pipeline fills the holes. What is checked: the real loaders, shapes, determinism, and that
    the fill changes holes only."""
    settings = {"model": str(pipelines["marigold"]), "inpaint": str(pipelines["inpaint"]), "device": "cpu",
                "steps": 1, "inpaint_steps": 2, "known_depth": [[48, 60, 2.0], [48, 40, 6.0]]}
    generator = DepthGenerator(tiny_preset("strafe", 2), settings, "test")
    generator.set_text("a", None)
    rgb = np.asarray(Image.open(concept(tmp_path)))
    first = generator.model(rgb, np.eye(3), np.eye(4))
    assert first.kind == "depth" and first.values.shape == (H, W) and np.isfinite(first.values).all()
    np.testing.assert_array_equal(generator.model(rgb, np.eye(3), np.eye(4)).values, first.values)
    holes = np.zeros((H, W), bool)
    holes[10:30, 20:50] = True
    filled = generator.fill(rgb, holes, "a")
    assert (filled[~holes] == rgb[~holes]).all() and (filled[holes] != rgb[holes]).any()
    image = ConceptImage(rgb, "hall", "2" * 64)
    generator.survey(image)
    # Random depth puts surfaces anywhere, so the free-space check would (rightly) refuse to walk: no check.
    path, _ = camera_path(generator.preset, FreeSpace(depth=8.0, centre=np.zeros(3), clearance=None))
    walk = generator.generate(image, path, silent)
    info = walk.info["generator"]["depth"]
    assert "MarigoldDepthPipeline" in info["model"] and "StableDiffusionInpaintPipeline" in info["fill"]
    assert info["metric_fit"]["method"].startswith("known depth") and len(walk) == 2


def test_diffusers_folder_of_the_wrong_pipeline_type(pipelines, tmp_path):
    _refused(tmp_path, ["--depth-model", str(pipelines["inpaint"])],
             ["StableDiffusionInpaintPipeline", "not a MarigoldDepthPipeline"])
    model = floor_onnx(tmp_path / "m.onnx")
    image = concept(tmp_path, "other")
    image.with_suffix(".toml").write_text(f'[depth]\ninpaint = "{pipelines["marigold"]}"\n')
    run = CliRunner().invoke(main, ["build", str(image), "-g", "depth", "--depth-model", str(model),
                                    "-o", str(tmp_path / "out2")])
    assert run.exit_code == 2 and "MarigoldDepthPipeline folder, not an inpainting pipeline" in run.output
    assert not (tmp_path / "out2").exists()


class FloorAndSky:
    """TEST DOUBLE, labelled: an endless floor 1.6 m below the first camera under an empty sky (no hit: a
    depth far beyond max_depth_m, as a depth model says 'very far')."""

    description = "test double: floor and sky"

    def __call__(self, rgb: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> RelativeDepth:
        floor = ground_depth(K, c2w, rgb.shape[1], rgb.shape[0], 1.6)
        return RelativeDepth(np.where(floor > 0, floor, 1e6).astype(np.float32), "depth")


def test_the_sky_is_never_a_surface():
    """Sky points stay in the memory at max_depth_m; seen from a camera that walked 20 m they are nearer than
    that, and must still come out as unknown depth (0), never as geometry."""
    preset = tiny_preset("walk_forward", 4)
    generator = DepthGenerator(preset, {"max_depth_m": 100.0}, "test", depth_model=FloorAndSky())
    first = CameraPath(np.eye(4)[None], intrinsics_from_fov(60.0, W, H), W, H)
    image = ConceptImage(np.full((H, W, 3), 90, np.uint8), "plain", "3" * 64)
    c2w = np.repeat(np.eye(4)[None], 4, axis=0)
    c2w[:, 2, 3] = [0.0, 5.0, 10.0, 20.0]
    walk = generator.generate(image, CameraPath(c2w, first.K[0], W, H), silent)
    floor = ground_depth(first.K[0], np.eye(4), W, H, 1.6)
    floor = (floor > 0) & (floor < 100.0)  # the floor beyond max_depth_m is as far as the sky
    for i in range(len(walk)):
        np.testing.assert_array_equal(walk.depth[i] > 0, floor)


def test_a_dropped_sidecar_may_not_name_the_model(tmp_path):
    """`model` and `inpaint` name files on the machine: from a drop folder they are refused, while the
    daemon's own defaults.toml may set them."""
    from lyra_assets.job import Layer, resolve_job

    image = concept(tmp_path)
    image.with_suffix(".toml").write_text('generator = "depth"\n[depth]\nmodel = "/etc/passwd"\n')
    with pytest.raises(LyraAssetsError, match=r"\[depth\] model cannot be set from a drop folder"):
        resolve_job(image, drop_folder=True)
    image.with_suffix(".toml").unlink()
    defaults = Layer({"generator": "depth", "depth": {"model": "models/da.onnx"}}, "ROOT/defaults.toml")
    spec = resolve_job(image, defaults=defaults, drop_folder=True)
    assert spec.generator == "depth" and spec.generator_settings["model"] == "models/da.onnx"
