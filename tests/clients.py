"""The real clients the exported files are checked with: the Khronos glTF-Validator, Blender's importers,
three.js in headless Chromium, Godot 3's importer and gltf-transform.

All are set up outside the project's virtualenv (scripts/test.sh installs them). Without them a test is
skipped with the command that installs what is missing; under CI (the CI environment variable set) it fails
instead, so CI can never pass by silently skipping the real clients.
"""
from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlencode

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
VALIDATOR_SCRIPT = REPO_ROOT / "tests" / "gltf_validator.mjs"
BLENDER_SCRIPT = REPO_ROOT / "tests" / "blender_import.py"
THREE_PAGE = REPO_ROOT / "tests" / "three_page.html"
GODOT_SCRIPT = REPO_ROOT / "tests" / "godot_import.gd"
WEB_HELPERS = REPO_ROOT / "lyra_assets" / "export" / "web"


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



def npm_package(name: str) -> Path:
    path = REPO_ROOT / "node_modules" / name
    if not path.is_dir():
        missing(f"the npm package {name} is not installed", f"cd {REPO_ROOT} && npm ci")
    return path


def gltf_transform() -> Path:
    node()
    npm_package("@gltf-transform/cli")
    return REPO_ROOT / "node_modules" / ".bin" / "gltf-transform"


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        missing("chromium is not on PATH", "apt-get install -y chromium (Debian's package)")
    return found


def three_render(glb: Path, **query: Any) -> dict[str, Any]:
    """Load glb with three.js' GLTFLoader in headless Chromium (tests/three_page.html) and return its report:
    meshes, triangles drawn, and `image` (H, W, 3 uint8) from the spawn camera, or `levels` in LOD mode.

    The page and its files are served on 127.0.0.1 only, from a port the system picks.
    """
    browser = chromium()
    three = npm_package("three")
    routes = {"/three/": three, "/lyra/": WEB_HELPERS, "/files/": Path(glb).parent}
    results: list[dict[str, Any]] = []
    done = threading.Event()

    class Handler(SimpleHTTPRequestHandler):
        def translate_path(self, path: str) -> str:
            path = path.split("?", 1)[0]
            if path == "/page.html":
                return str(THREE_PAGE)
            for prefix, folder in routes.items():
                if path.startswith(prefix):
                    return str(folder / path[len(prefix):])
            return str(REPO_ROOT / "missing")

        def do_POST(self) -> None:
            results.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()
            done.set()

        def log_message(self, *args: Any) -> None:  # quiet
            pass

    Handler.extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".js": "text/javascript",
                              ".mjs": "text/javascript", ".glb": "model/gltf-binary"}
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/page.html?" + urlencode({"file": f"/files/{Path(glb).name}",
                                                                           **query})
    with tempfile.TemporaryDirectory() as profile:
        process = subprocess.Popen(
            [browser, "--headless=new", "--no-sandbox", "--no-first-run", "--disable-extensions",
             f"--user-data-dir={profile}", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
             "--ignore-gpu-blocklist", url], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            finished = done.wait(timeout=180)
        finally:
            process.terminate()
            try:
                _, stderr = process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                _, stderr = process.communicate()
            server.shutdown()
            server.server_close()
    if not finished:
        raise AssertionError(f"three.js page reported nothing for {glb}:\n{stderr[-3000:]}")
    result = results[0]
    if "error" in result:
        raise AssertionError(f"three.js could not show {glb}: {result['error']}")
    if "png" in result:
        from PIL import Image

        png = base64.b64decode(result.pop("png").split(",", 1)[1])
        result["image"] = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    return result


def godot3() -> str:
    found = shutil.which("godot3-server") or shutil.which("godot3")
    if found is None:
        missing("Godot 3 is not on PATH", "apt-get install -y godot3-server (Debian's headless Godot 3)")
    return found


def godot_import(glb: Path) -> dict[str, Any]:
    """Import glb with Godot 3's editor importer in a scratch project and return the scene tree it made
    (tests/godot_import.gd: name, type, children; triangles of meshes, shapes of collision shapes)."""
    godot = godot3()
    with tempfile.TemporaryDirectory() as project:
        folder = Path(project)
        (folder / "project.godot").write_text('config_version=4\n\n[application]\nconfig/name="check"\n')
        shutil.copy(glb, folder / Path(glb).name)
        shutil.copy(GODOT_SCRIPT, folder / GODOT_SCRIPT.name)
        # The editor imports on start-up; with no window it never gets to --quit, so it is stopped once the
        # imported scene is written.
        editor = subprocess.Popen([godot, "--path", project, "--editor", "--quit"], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            for _ in range(600):
                if list(folder.glob(".import/*.scn")) and list(folder.glob(".import/*.md5")):
                    break
                if editor.poll() is not None:
                    break
                threading.Event().wait(0.2)
        finally:
            editor.terminate()
            editor.wait(timeout=30)
        run = subprocess.run([godot, "--path", project, "-s", GODOT_SCRIPT.name, f"res://{Path(glb).name}"],
                             capture_output=True, text=True, timeout=300)
    lines = [line for line in run.stdout.splitlines() if line.startswith("LYRA_JSON ")]
    if not lines or lines[-1] == "LYRA_JSON null":
        raise AssertionError(f"Godot could not import {glb}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    return json.loads(lines[-1][len("LYRA_JSON "):])
