"""One resolved job spec: the layers' order, one job key everywhere, camera paths from files, provenance."""
import json
import subprocess
import sys

import numpy as np
import pygltflib
import pytest
from click.testing import CliRunner

from lyra_assets.cli import main
from lyra_assets.daemon.settings import load_defaults, plan_job
from lyra_assets.errors import LyraAssetsError
from lyra_assets.job import Layer, resolve_job
from lyra_assets.trajectory import CameraPath, look_at

TINY = {"camera": {"width": 208, "height": 120}, "path": {"frames": 5},
        "assets": {"lod0_triangles": 2000, "texture_size": 256}, "fusion": {"voxel_size_m": 0.2}}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def image(tmp_path, example_image):
    copy = tmp_path / "hall.png"
    copy.write_bytes(example_image.read_bytes())
    return copy


def test_layers_weakest_first(image):
    defaults = Layer({"camera": {"width": 208, "height": 120}, "path": {"frames": 9},
                      "assets": {"texture_size": 256, "lod0_triangles": 3000}}, "defaults.toml")
    image.with_suffix(".toml").write_text('preset = "orbit"\n[assets]\ntexture_size = 1024\n')
    spec = resolve_job(image, {"assets": {"texture_size": 512}}, defaults=defaults)
    assert spec.preset.name == "orbit" and spec.preset.path.motion == "orbit"  # the sidecar picked the preset
    assert spec.preset.path.frames == 9  # the farm's defaults hold over the preset's own 121
    assert spec.assets.texture_size == 512  # the command line over the sidecar over the defaults
    assert spec.assets.lod0_triangles == 3000 and spec.preset.camera.width == 208
    again = resolve_job(image, spec.settings(), find_sidecar_next_to_image=False)
    assert again.settings() == spec.settings() and again.key == spec.key  # the resolved table is a fixed point


def test_lods_shorthand_replaces_lower_layers_ratios(image):
    image.with_suffix(".toml").write_text("[assets]\nlod_ratios = [0.5, 0.2, 0.1, 0.05]\n")
    assert resolve_job(image).assets.levels == 5
    assert resolve_job(image, {"assets": {"lods": 2}}).assets.lod_ratios == (0.25,)


@pytest.mark.parametrize("text, says", [
    ('preset = ["orbit"]\n', "preset must be a name"),
    ('generator = ["layout"]\n', "generator must be a name"),
    ("[preset]\nname = 'orbit'\n", "preset must be a name"),
    ("assets = 3\n", "[assets] must be a table"),
    ('[assets]\ntexture_size = "big"\n', "texture_size"),
    ("[assets]\ntexture_size = 1000\n", "power of two"),
    ("[assets]\nlods = 12\n", "lods must be a whole number from 2 to 8"),
    ("[fusion]\nvoxel_size_m = nan\n", "finite"),
    ("[scene]\neye_height_m = nan\n", "finite"),
    ('[export]\nformats = ["fbx"]\n', "formats"),
    ('preset = "nope"\n', "hall.toml: unknown preset 'nope'"),
    ("colour = 1\n", "unknown key 'colour'"),
])
def test_wrong_types_and_values_anywhere_name_the_file(image, text, says):
    image.with_suffix(".toml").write_text(text)
    with pytest.raises(LyraAssetsError) as error:
        resolve_job(image)
    assert says in str(error.value) and "hall.toml" in str(error.value)


def test_one_key_in_the_manifest_the_glb_and_the_drop_folder(image, tmp_path):
    image.with_suffix(".toml").write_text("[assets]\ntexture_size = 1024\n")
    options = ["--frames", 5, "--lod0-triangles", 2000, "--voxel-size", 0.2, "--texture-size", 512]
    result = run("build", image, "-o", tmp_path / "out", *options)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "out" / "hall"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["lods"][0]["texture_size"] == 512  # the command line won over the sidecar
    gltf = pygltflib.GLTF2().load(str(folder / "hall.glb"))
    root = next(n for n in gltf.nodes if n.name == "hall")
    walk_manifest = json.loads((folder / "walkthrough" / "manifest.json").read_text())

    drop = tmp_path / "drop" / "hall.png"  # the same image dropped, its sidecar saying what the CLI resolved
    drop.parent.mkdir()
    drop.write_bytes(image.read_bytes())
    drop.with_suffix(".toml").write_text("[path]\nframes = 5\n[assets]\nlod0_triangles = 2000\ntexture_size = 512\n"
                                         "[fusion]\nvoxel_size_m = 0.2\n")
    journal_key = plan_job(drop, load_defaults(tmp_path / "no-defaults.toml")).key
    assert manifest["job_key"] == root.extras["job_key"] == walk_manifest["job_key"] == journal_key

    rebuilt = run("build", "--from-manifest", folder / "manifest.json", "-o", tmp_path / "again")
    assert rebuilt.exit_code == 0, rebuilt.output
    again = json.loads((tmp_path / "again" / "hall" / "manifest.json").read_text())
    assert again["job_key"] == manifest["job_key"]
    assert [lod["triangles"] for lod in again["lods"]] == [lod["triangles"] for lod in manifest["lods"]]

    assert run("build", image, "-o", tmp_path / "other", *options[:-1], 256).exit_code == 0
    assert json.loads((tmp_path / "other" / "hall" / "manifest.json").read_text())["job_key"] != manifest["job_key"]


def test_a_path_file_honours_frames_and_size(image, tmp_path):
    n = 500
    eyes = np.stack([np.zeros(n), np.zeros(n), np.linspace(0, 2, n)], axis=1)
    c2w = np.stack([look_at(e, e + [0.3 * np.sin(i / 80), 0, 1]) for i, e in enumerate(eyes)])
    K = np.array([[900.0, 0, 640], [0, 900, 360], [0, 0, 1]])
    CameraPath(c2w, K, 1280, 720).to_lyra_npz(tmp_path / "lyra.npz")
    spec = resolve_job(image, {"path": {"frames": 41}, "camera": {"width": 320, "height": 180}},
                       trajectory=tmp_path / "lyra.npz")
    path = spec.trajectory
    assert len(path) == 41 and (path.width, path.height) == (320, 180)
    assert np.allclose(path.c2w[0], c2w[0], atol=1e-5) and np.allclose(path.c2w[-1], c2w[-1], atol=1e-5)  # ends kept
    assert np.isclose(path.K[0, 0, 0], 900 / 4)
    result = run("generate", image, "-o", tmp_path / "out", "--trajectory", tmp_path / "lyra.npz", "--frames", 41,
                 "--sidecar", _sidecar(tmp_path, "[camera]\nwidth = 208\nheight = 118\n"))
    assert result.exit_code == 0, result.output
    walk = tmp_path / "out" / "hall" / "walkthrough"
    assert len(list((walk / "frames").glob("*.png"))) == 41
    notes = json.loads((walk / "manifest.json").read_text())["camera_path"]
    assert notes["poses_in_file"] == 500 and notes["frames"] == 41 and notes["resampled"] is True
    unresampled = resolve_job(image, trajectory=tmp_path / "lyra.npz")
    assert len(unresampled.trajectory) == 500 and unresampled.path_file.resampled is False


def test_input_errors_come_before_the_heavy_imports(tmp_path):
    code = ("import sys; from lyra_assets.cli import main\n"
            "try:\n    main(['build', sys.argv[1]])\nexcept SystemExit as e:\n"
            "    print(e.code, sorted(m for m in ('numba', 'trimesh', 'xatlas', 'torch') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "nope.png")], capture_output=True, text=True)
    assert proc.stdout.strip() == "2 []" and "no such image file" in proc.stderr


def _sidecar(folder, text):
    path = folder / "settings.toml"
    path.write_text(text)
    return path


def test_build_goes_on_from_the_walkthrough_this_job_saved(image, tmp_path):
    """A build that failed in the asset stages left its walkthrough: the retry uses it instead of refusing."""
    options = ["--frames", 5, "--lod0-triangles", 2000, "--voxel-size", 0.2]
    assert run("generate", image, "-o", tmp_path / "out", "--frames", 5).exit_code == 0
    saved = tmp_path / "out" / "hall" / "walkthrough" / "manifest.json"
    before = saved.stat()
    result = run("build", image, "-o", tmp_path / "out", *options, "--texture-size", 256)
    assert result.exit_code == 0, result.output
    assert (saved.stat().st_ino, saved.stat().st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    other_walk = run("build", image, "-o", tmp_path / "out", *options[2:], "--frames", 7, "--force")
    assert other_walk.exit_code == 0 and saved.stat().st_mtime_ns != before.st_mtime_ns  # other frames: made anew
    refused = run("build", image, "-o", tmp_path / "out", *options[2:], "--frames", 9)
    assert refused.exit_code == 2 and "already exists; pass --force" in refused.output


def test_the_generators_own_table_is_checked_when_the_job_is_resolved(image):
    image.with_suffix(".toml").write_text('[layout]\nvanishing_point = "x"\n')
    with pytest.raises(LyraAssetsError, match=r"hall.toml: \[layout\] vanishing_point"):
        resolve_job(image)
    image.with_suffix(".toml").write_text('generator = "lyra2"\n[lyra2]\npose_scal = 1.0\n')
    with pytest.raises(LyraAssetsError, match=r"\[lyra2\] unknown key 'pose_scal'"):
        resolve_job(image)
