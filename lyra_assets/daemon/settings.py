"""ROOT/defaults.toml, and turning a claimed image (with its sidecar) into a validated job spec and its key.

defaults.toml holds settings for every job of the drop folder, in the sidecar's shape (see job.py):

    preset = "walk_forward"          generator = "layout"
    [camera] / [path] / [scene]      any preset key, e.g. [path] frames = 41
    [assets] / [fusion] / [export]   the asset stages, e.g. [assets] texture_size = 512
    [lyra2] ...                      a generator's settings, its locations included (only the operator
                                     writes this file; a dropped sidecar may not set locations)

A sidecar next to an image wins over it. It is read once when the daemon starts; restart after editing it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..images import load_concept_image
from ..job import JobSpec, Layer, check_settings, read_sidecar, resolve_job


def load_defaults(path: Path) -> Layer | None:
    """ROOT/defaults.toml, checked now so that a typo stops the daemon at start instead of failing every job."""
    if not path.exists():
        return None
    layer = Layer(read_sidecar(path), str(path))
    check_settings([layer])
    return layer


def plan_job(image: Path, defaults: Layer | None) -> JobSpec:
    """Validate a claimed image and its sidecar (next to it, as the CLI finds it) under the folder's defaults.
    Raises LyraAssetsError with what to fix. The daemon named the claimed file after its output folder."""
    spec = resolve_job(image, defaults=defaults, drop_folder=True, name=image.stem)
    load_concept_image(image)  # a damaged or truncated image is refused here, not by a worker
    return spec


def plan_record(spec: JobSpec) -> dict[str, Any]:
    """What the journal keeps and a worker is given: the resolved spec and its key."""
    return {"key": spec.key, "job": spec.to_record()}


def planned_spec(plan: dict[str, Any]) -> JobSpec:
    """The spec a worker builds: exactly what was checked at claim time (the sidecar is not read again)."""
    return JobSpec.from_record(plan["job"], source=f"job {plan['key']}")
