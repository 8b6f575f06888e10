"""The command line as a user runs it: outputs, progress for machines, errors without tracebacks."""
import json
import subprocess
import sys

import numpy as np
from click.testing import CliRunner

from lyra_assets import __version__
from lyra_assets.cli import main
from lyra_assets.trajectory import CameraPath
from lyra_assets.walkthrough import Walkthrough


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_version_and_presets():
    assert __version__ in run("--version").output
    listing = run("presets", "list")
    assert listing.exit_code == 0 and "walk_forward" in listing.output and "look_around" in listing.output
    as_json = json.loads(run("presets", "list", "--json").output)
    assert {p["name"] for p in as_json} >= {"walk_forward", "orbit", "strafe", "zoom_in_out"}
    shown = run("presets", "show", "walk_and_return")
    assert '"motion": "out_and_back"' in shown.output and 'inherits = "walk_forward"' in shown.output


def test_generate_writes_a_complete_walkthrough(small_sidecar, tmp_path):
    out = tmp_path / "out"
    result = run("generate", small_sidecar, "-o", out)
    assert result.exit_code == 0, result.output
    folder = out / "corridor" / "walkthrough"
    names = {p.name for p in folder.iterdir()}
    assert names == {"manifest.json", "input.png", "frames", "depth.npz", "observed.npz", "trajectory.npz",
                     "preview.mp4", "contact_sheet.png", "labelled.png"}
    assert len(list((folder / "frames").glob("*.png"))) == 9
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["generator"]["name"] == "layout"
    assert manifest["provenance"]["job"]["settings"]["camera"]["width"] == 208  # the sidecar was read
    assert manifest["provenance"]["job"]["sidecar"].endswith("corridor.toml")
    assert len(manifest["job_key"]) == 32 and "shortened" in manifest["camera_path"]
    walk = Walkthrough.load(folder)
    assert walk.frames.shape == (9, 120, 208, 3) and walk.depth.dtype == np.float32
    mp4 = (folder / "preview.mp4").read_bytes()
    assert mp4[4:8] == b"ftyp" and b"avc1" in mp4  # an H.264 MP4
    assert not [p for p in out.rglob("*") if ".partial" in p.name or p.name.endswith(".tmp")]


def test_existing_output_is_not_overwritten_without_force(small_sidecar, tmp_path):
    out = tmp_path / "out"
    assert run("generate", small_sidecar, "-o", out).exit_code == 0
    manifest = out / "corridor" / "walkthrough" / "manifest.json"
    before = manifest.read_bytes()
    again = run("generate", small_sidecar, "-o", out)
    assert again.exit_code == 2 and "already exists; pass --force" in again.output
    assert manifest.read_bytes() == before
    forced = run("generate", small_sidecar, "-o", out, "--force", "--preset", "strafe")
    assert forced.exit_code == 0
    assert json.loads(manifest.read_text())["provenance"]["job"]["settings"]["path"]["motion"] == "strafe"


def test_json_progress_is_one_object_per_line(small_sidecar, tmp_path):
    result = run("--json-progress", "generate", small_sidecar, "-o", tmp_path / "o")
    events = [json.loads(line) for line in result.stdout.splitlines()]
    progress = [e for e in events if e["event"] == "progress"]
    assert {e["stage"] for e in progress} >= {"survey", "generate", "save"}
    assert all(set(e) == {"event", "stage", "done", "total", "message"} for e in progress)
    generate = [e for e in progress if e["stage"] == "generate"]
    assert generate[-1]["done"] == generate[-1]["total"] == 9
    assert events[-1]["event"] == "done" and events[-1]["outputs"]["walkthrough"].endswith("walkthrough")


def test_trajectory_file_round_trip(small_sidecar, tmp_path):
    assert run("generate", small_sidecar, "-o", tmp_path / "a", "--preset", "orbit").exit_code == 0
    first = tmp_path / "a" / "corridor" / "walkthrough"
    result = run("generate", small_sidecar, "-o", tmp_path / "b", "--trajectory", first / "trajectory.npz")
    assert result.exit_code == 0, result.output
    second = tmp_path / "b" / "corridor" / "walkthrough"
    a, b = Walkthrough.load(first), Walkthrough.load(second)
    assert np.allclose(a.path.c2w, b.path.c2w, atol=1e-6)
    assert np.abs(a.frames.astype(int) - b.frames.astype(int)).max() <= 1  # float32 poses in the file


def test_lyra_frame_rule_flag(small_sidecar, tmp_path):
    result = run("generate", small_sidecar, "-o", tmp_path, "--frames", "50", "--lyra-frames")
    assert result.exit_code == 0, result.output
    assert len(CameraPath.from_lyra_npz(tmp_path / "corridor" / "walkthrough" / "trajectory.npz")) == 81


def test_bad_inputs_exit_2_with_a_message(tmp_path, small_sidecar):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    cases = [
        (["generate", tmp_path / "bad.png"], "not an image"),
        (["generate", small_sidecar, "--preset", "nope"], "command-line options: unknown preset 'nope'; available:"),
        (["generate", small_sidecar, "--generator", "magic"], "unknown generator 'magic'; available: depth, layout"),
        (["presets", "show", "nope"], "unknown preset"),
        (["build", small_sidecar, "--voxel-size", "-1"], "[fusion] voxel_size_m: Input should be greater than 0"),
        (["build", small_sidecar, "--texture-size", "100"], "texture_size: Value error, must be a power of two"),
        (["build", small_sidecar, "--fov", "500"], "camera.hfov_deg"),
    ]
    for args, message in cases:
        result = run(*args, "-o", tmp_path / "o") if args[0] in ("generate", "build") else run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()  # refused before any work, nothing written


def test_bad_sidecar_names_key_and_file(tmp_path, small_sidecar):
    sidecar = small_sidecar.with_suffix(".toml")
    sidecar.write_text("[camera]\nfov = 70\n")
    result = run("generate", small_sidecar, "-o", tmp_path / "o")
    assert result.exit_code == 2 and "corridor.toml" in result.output and "camera.fov" in result.output
    sidecar.write_text('flavour = "mint"\n')
    result = run("generate", small_sidecar, "-o", tmp_path / "o")
    assert result.exit_code == 2 and "unknown key 'flavour'; settings may hold: preset" in result.output
    sidecar.write_text("[layout]\nvanishing_point = [1, 2, 3]\n")
    result = run("generate", small_sidecar, "-o", tmp_path / "o")
    assert result.exit_code == 2 and "[layout] vanishing_point" in result.output
    assert not (tmp_path / "o").exists()


def test_installed_console_script_prints_no_traceback(tmp_path):
    (tmp_path / "zero.png").write_bytes(b"")
    proc = subprocess.run([sys.executable, "-m", "lyra_assets", "generate", str(tmp_path / "zero.png")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert "empty (0 bytes)" in proc.stderr and "Traceback" not in proc.stderr
