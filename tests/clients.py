"""The real clients the exported files are checked with: the Khronos glTF-Validator and Blender's importers.

Both are set up outside the project's virtualenv. Without them a test is skipped with the command that
installs what is missing; under CI (the CI environment variable set) it fails instead, so CI can never pass
by silently skipping the real clients.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, NoReturn

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
VALIDATOR_SCRIPT = REPO_ROOT / "tests" / "gltf_validator.mjs"
BLENDER_SCRIPT = REPO_ROOT / "tests" / "blender_import.py"


def missing(what: str, setup: str) -> NoReturn:
    message = f"{what}; set it up with: {setup}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set, so the real clients are required)")
    pytest.skip(message)


def blender_python() -> Path:
    path = Path(os.environ.get("LYRA_ASSETS_BLENDER_PYTHON") or REPO_ROOT / ".venv-blender" / "bin" / "python")
    if not path.is_file():
        missing(f"no Python with Blender as a module at {path}",
                "python3.11 -m venv .venv-blender && .venv-blender/bin/pip install bpy==5.0.1 "
                "(or point LYRA_ASSETS_BLENDER_PYTHON at one)")
    return path


def node() -> str:
    found = shutil.which("node")
    if found is None:
        missing("node is not on PATH", "install Node.js 20 or newer, then run `npm ci` at the repository root")
    if not (REPO_ROOT / "node_modules" / "gltf-validator").is_dir():
        missing("the npm package gltf-validator is not installed", f"cd {REPO_ROOT} && npm ci")
    return found


def validate(path: Path) -> dict[str, Any]:
    """The validator's JSON report for one file."""
    run = subprocess.run([node(), str(VALIDATOR_SCRIPT), str(path)], capture_output=True, text=True,
                         timeout=300)
    if run.returncode not in (0, 1):  # 1 only means the report lists errors; the caller looks at them
        raise AssertionError(f"gltf-validator could not run on {path}:\n{run.stderr}")
    return json.loads(run.stdout)


def blender_import(path: Path, guides: bool = False) -> dict[str, Any]:
    """What Blender's glTF or USD importer made of one file (see blender_import.py for the fields); `guides`:
    USD prims of purpose guide too, which Blender leaves out by default."""
    command = [str(blender_python()), str(BLENDER_SCRIPT), str(path)] + (["--guides"] if guides else [])
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if run.returncode != 0:
        raise AssertionError(f"Blender could not import {path}:\n{run.stdout}\n{run.stderr}")
    return json.loads(run.stdout.strip().splitlines()[-1])

