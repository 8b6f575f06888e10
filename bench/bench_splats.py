"""Benchmark of the splat renderers: the torch CPU fallback, and gsplat on CUDA where there is one.

Renders the test room of tests/scenes.py covered in Gaussian discs (as tests/test_splats.py builds it) at
Lyra's 832x480 along a short walk, and prints ms per frame for each renderer; with CUDA and gsplat, also their
agreement on the same scene (PSNR of the frames, depth differences, alpha) and the speed ratio. Without a
GPU it says that the comparison was not run.

    .venv/bin/python bench/bench_splats.py [--frames 6] [--spacing 0.05] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from scenes import BoxScene, forward_path
from test_splats import box_splats

from lyra_assets.splats import render_path
from lyra_assets.trajectory import CameraPath


def timed(splats, path: CameraPath, renderer: str):
    """Render the path; seconds per frame, after one frame of warm-up (gsplat compiles its kernels then)."""
    render_path(splats, CameraPath(path.c2w[:1], path.K[:1], path.width, path.height), renderer)
    started = time.perf_counter()
    out = render_path(splats, path, renderer)
    if renderer == "gsplat":
        torch.cuda.synchronize()
    return out, (time.perf_counter() - started) / len(path)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--spacing", type=float, default=0.05, help="metres between Gaussians on the walls")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads [all cores]")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # test_splats sets 1 for the test suite's workers; not wanted here
    scene = BoxScene()
    splats = box_splats(scene, spacing=args.spacing)
    path = forward_path(frames=args.frames, distance=1.5, width=832, height=480, hfov_deg=70.0)
    truth = scene.render(path)
    print(f"{len(splats):,} Gaussians, {args.frames} frames at 832x480, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads")

    cpu, cpu_s = timed(splats, path, "cpu")
    covered = cpu.depth > 0
    relative = np.abs(cpu.depth - truth.depth)[covered] / truth.depth[covered]
    print(f"cpu     {1000 * cpu_s:8.1f} ms/frame; vs the ray-cast room: depth on {covered.mean():.1%} of pixels, "
          f"median relative error {np.median(relative):.2%}, frames PSNR {psnr(cpu.frames, truth.frames):.1f} dB")

    if not torch.cuda.is_available():
        print("gsplat  NOT RUN: no CUDA device here, so the CUDA-vs-CPU agreement and speed ratio were not measured")
        return
    try:
        import gsplat  # noqa: F401
    except ImportError:
        print("gsplat  NOT RUN: CUDA is present but gsplat is not installed (pip install 'lyra-assets[gpu]')")
        return
    gpu, gpu_s = timed(splats, path, "gsplat")
    both = (cpu.depth > 0) & (gpu.depth > 0)
    depth_diff = np.abs(cpu.depth - gpu.depth)[both] / gpu.depth[both]
    print(f"gsplat  {1000 * gpu_s:8.1f} ms/frame on {torch.cuda.get_device_name(0)}")
    print(f"agreement: frames PSNR {psnr(cpu.frames, gpu.frames):.1f} dB; alpha max |diff| "
          f"{np.abs(cpu.alpha - gpu.alpha).max():.2e}; depth kept by both {both.mean():.1%}, by one only "
          f"{((cpu.depth > 0) != (gpu.depth > 0)).mean():.2%}; relative depth diff median {np.median(depth_diff):.2e}, "
          f"max {depth_diff.max():.2e}")
    print(f"speed ratio cpu/gsplat: {cpu_s / gpu_s:.0f}x")


if __name__ == "__main__":
    main()
