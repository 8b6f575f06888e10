"""Benchmark of the embedded `layout` generator on the example image at Lyra's 832x480.

Prints ms per frame (target <= 50 ms on 2 cores) and the cost of 121 vs 241 frames (should be linear),
for rendering alone and for the whole `generate` including writing the walkthrough folder; then the
open-scene renderer (ground, pop-ups, sky dome) on an outdoor test scene against the box room in the same
run (target: within 2x of the room).

    .venv/bin/python bench/bench_generator.py
"""
from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lyra_assets.generators.layout import LayoutGenerator
from lyra_assets.images import ConceptImage, load_concept_image
from lyra_assets.motions import camera_path
from lyra_assets.pipeline import generate
from lyra_assets.presets import load_preset
from lyra_assets.progress import silent
from lyra_assets.trajectory import CameraPath, intrinsics_from_fov

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from scenes import OpenGroundScene  # noqa: E402

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "corridor.png"
TARGET_MS = 50.0


def outdoor_image() -> ConceptImage:
    """The first view of the outdoor test scene (ground, two blocks, sky) at 832x480."""
    K = intrinsics_from_fov(60.0, 832, 480)
    pixels = OpenGroundScene().render(CameraPath(np.eye(4)[None], K, 832, 480)).frames[0]
    return ConceptImage(pixels, "outdoor", "bench-outdoor")


def render_seconds(frames: int, image: ConceptImage | None = None) -> float:
    image = image or load_concept_image(EXAMPLE)
    preset = load_preset("walk_forward", overrides={"path": {"frames": frames}})
    generator = LayoutGenerator(preset, {})
    path, _ = camera_path(preset, generator.survey(image))  # fits the room once, outside the timing
    started = time.perf_counter()
    generator.generate(image, path, silent)
    return time.perf_counter() - started


def generate_seconds(frames: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        generate(EXAMPLE, "walk_forward", out, options={"path": {"frames": frames}})
        return time.perf_counter() - started


def main() -> None:
    print("layout generator, 832x480, example corridor")
    for label, measure in (("render", render_seconds), ("generate (incl. writing)", generate_seconds)):
        t121, t241 = min(measure(121) for _ in range(2)), min(measure(241) for _ in range(2))
        print(f"{label:<26} 121 frames {t121:6.2f} s = {1000 * t121 / 121:5.1f} ms/frame"
              f" ({1000 * t121 / 121 / TARGET_MS:.2f}x the {TARGET_MS:.0f} ms target);"
              f" 241 frames {t241:6.2f} s; 241/121 cost ratio {t241 / t121:.2f} (linear: {241 / 121:.2f})")
    outdoor = outdoor_image()
    room, open_scene = min(render_seconds(121) for _ in range(2)), min(render_seconds(121, outdoor) for _ in range(2))
    print(f"open scene (outdoor test scene) 121 frames {open_scene:6.2f} s = {1000 * open_scene / 121:5.1f} ms/frame;"
          f" box room {1000 * room / 121:5.1f} ms/frame; ratio {open_scene / room:.2f} (target <= 2)")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
