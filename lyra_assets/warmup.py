"""Compile every numba kernel ahead of the first build: `lyra-assets warm-up`, part of the set-up command.

numba compiles a kernel the first time a process runs it and keeps the machine code in NUMBA_CACHE_DIR
(~/.cache/lyra-assets/numba unless the user set one: see __init__.py), from which later processes load it
in milliseconds. That folder is the user's, so a read-only install works. Compiling all the kernels costs
about 15 s of CPU once per machine, user and version; the warm-up pays it at set-up instead of in the
user's first build (bench/bench_build.py measures both).

It runs tiny jobs through the same stage functions a build calls (a room and an open scene from the layout
generator, fusion, the asset stages and their bake, the depth generator's point memory), so every kernel is
compiled for exactly the argument types a build passes it. Run again, it only loads them.
"""
from __future__ import annotations

import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numba
import numpy as np

from .progress import Progress, silent

SIZE = (160, 96)  # the made-up concept images: width, height
# Tiny jobs: a few small frames, a small atlas; one level re-unwrapped, as the longer LOD chains are.
OPTIONS = {"path": {"frames": 3}, "camera": {"width": 112, "height": 64},
           "assets": {"texture_size": 256, "lod0_triangles": 3000, "lods": 3}}
ROOM = {"scene": "room", "vanishing_point": [80, 48], "back_wall": [56, 32, 104, 64]}
OUTDOOR = {"scene": "outdoor", "horizon_px": 36.0}


@dataclass(frozen=True)
class WarmUp:
    compiled: list[str]  # the kernels this run compiled (empty: every one was in the cache already)
    seconds: float
    cache: str  # where numba keeps them


def warm_up(progress: Progress = silent) -> WarmUp:
    """Compile (or load) every kernel a build may run, into the user's numba cache."""
    from .assets.level import make_level_asset
    from .generators.memory import PointMemory
    from .job import resolve_job
    from .pipeline import walk
    from .reconstruct.fusion import fuse

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lyra-assets-warm-up-") as scratch, \
            compiles_reported(progress, "warm-up") as compiled:
        for name, layout, paint in (("room", ROOM, _room_picture), ("outdoor", OUTDOOR, _outdoor_picture)):
            image = Path(scratch) / f"{name}.png"
            cv2.imwrite(str(image), paint()[:, :, ::-1])
            spec = resolve_job(image, {**OPTIONS, "layout": layout}, find_sidecar_next_to_image=False)
            walkthrough = walk(spec)
            fused = fuse(walkthrough)
            make_level_asset(name, fused.mesh, walkthrough, spec.assets)
        memory = PointMemory()  # the depth generator's: the world so far, rendered into the next camera
        path = walkthrough.path
        memory.add(walkthrough.frames[0], walkthrough.depth[0], walkthrough.observed[0],
                   walkthrough.depth[0] == 0, np.ones(walkthrough.depth[0].shape, bool), path.K[0], path.c2w[0], 0)
        memory.render(path.K[1], path.c2w[1], path.width, path.height)
    progress("warm-up", 1, 1, f"{len(compiled)} kernels compiled" if compiled else "every kernel was compiled")
    return WarmUp(compiled, time.perf_counter() - started, os.environ.get("NUMBA_CACHE_DIR", ""))


def set_up_numba() -> None:
    """numba's first kernel call in a process sets up its compiler context: 0.3-0.5 s even with every kernel
    in the cache, paid by the first stage that runs one (fusion) unless this ran first, on a thread where a
    core is free (`walk` starts it while the generator reads the picture)."""
    _first_kernel(np.zeros(1))


@numba.njit(cache=True)
def _first_kernel(x):  # serial: numba's default threading layer must not run two parallel kernels at once
    return x.sum()


@contextmanager
def compiles_reported(progress: Progress, stage: str = "compile", note: str = "") -> Iterator[list[str]]:
    """Within: each of our kernels that numba compiles (rather than loads from the cache) is reported as
    progress (stage, n, n + 1, "compiling NAME" + note) and added to the list yielded."""
    from numba.core import event

    compiled: list[str] = []

    class Compiles(event.Listener):
        def on_start(self, ev: event.Event) -> None:
            function = ev.data["dispatcher"].py_func
            if function.__module__.startswith(__package__):  # not numba's own helpers compiled along
                compiled.append(f"{function.__module__}.{function.__qualname__}")
                progress(stage, len(compiled), len(compiled) + 1, f"compiling {function.__qualname__}{note}")

        def on_end(self, ev: event.Event) -> None:
            pass

    with event.install_listener("numba:compile", Compiles()):
        yield compiled


def _room_picture() -> np.ndarray:
    """Floor, walls and ceiling shaded apart, a lit back wall around the vanishing point."""
    w, h = SIZE
    rows, cols = np.mgrid[0:h, 0:w]
    x0, y0, x1, y1 = ROOM["back_wall"]
    image = np.empty((h, w, 3), np.uint8)
    image[:] = (150, 130, 110)  # walls
    image[rows > y1] = (120, 95, 70)  # floor, below the back wall's foot
    image[rows < y0] = (200, 195, 185)  # ceiling
    image[(rows >= y0) & (rows <= y1) & (cols >= x0) & (cols <= x1)] = (230, 210, 160)  # back wall
    return image


def _outdoor_picture() -> np.ndarray:
    """Sky over ground, a block standing on the ground between them (a pop-up)."""
    w, h = SIZE
    rows = np.arange(h)[:, None, None]
    horizon = int(OUTDOOR["horizon_px"])
    sky = np.array([120, 170, 230]) + (rows / h) * 60
    ground = np.array([90, 110, 60]) + ((rows // 4) % 2) * 20
    image = np.where(rows < horizon, sky, ground) * np.ones((1, w, 1))
    image[20:70, 60:100] = (70, 70, 80)  # the block, its foot on the ground
    return np.clip(image, 0, 255).astype(np.uint8)
