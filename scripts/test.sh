#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine, then run the whole suite:
#   .venv/          the package with its test extra (editable)
#   node_modules/   the Khronos glTF-Validator, three.js, gltf-transform (npm, pinned in package-lock.json)
#   .venv-blender/  Blender as a Python module (PyPI bpy 5.0.1, Python 3.11), for the importer tests
#   chromium, godot3-server  Debian packages the client tests drive (three.js in headless Chromium, Godot 3's
#                   glTF importer); installed with apt-get when missing and running as root (as CI does)
# Extra arguments go to pytest, e.g. scripts/test.sh -k layout
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# A regular install (the README's first command) puts lyra_assets in site-packages, where it would shadow the
# editable install; so would what an uninstall leaves there (older versions kept numba's kernel caches in it),
# as a namespace package. Both go first.
if [ -f .venv/lib/python3.11/site-packages/lyra_assets/__init__.py ]; then
    .venv/bin/python -m pip uninstall --quiet --yes lyra-assets
fi
rm -rf .venv/lib/python3.11/site-packages/lyra_assets
echo "scripts/test.sh: installing lyra-assets and its test tools into .venv (torch CPU, Ray, onnxruntime," \
     "diffusers, usd-core, pybullet: about 2.9 GB, a few minutes the first time)" >&2
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'

echo "scripts/test.sh: npm ci (glTF validator, three.js, gltf-transform: about 80 MB)" >&2
npm ci --no-audit --no-fund --loglevel=error

missing_debs=()
command -v chromium >/dev/null || missing_debs+=(chromium)
command -v godot3-server >/dev/null || missing_debs+=(godot3-server)
if [ ${#missing_debs[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "scripts/test.sh: installing Debian packages for the client tests: ${missing_debs[*]}" >&2
        # A failed install is reported, not fatal: the client tests then say what is missing (and fail under CI).
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
              "${missing_debs[@]}" >/dev/null; } || echo "scripts/test.sh: apt-get could not install them" >&2
    else
        echo "scripts/test.sh: missing ${missing_debs[*]}; install them (apt-get install ${missing_debs[*]})" \
             "or the client tests skip (and fail under CI)" >&2
    fi
fi

if ! .venv-blender/bin/python -c "import bpy" 2>/dev/null; then
    echo "scripts/test.sh: installing Blender as a Python module into .venv-blender (bpy 5.0.1, about 1 GB)" >&2
    "$PYTHON" -m venv .venv-blender
    .venv-blender/bin/python -m pip install --quiet --disable-pip-version-check bpy==5.0.1
fi

echo "scripts/test.sh: compiling the numba kernels into ~/.cache/lyra-assets (once; seconds when done)" >&2
.venv/bin/lyra-assets --json-progress warm-up >/dev/null

exec .venv/bin/python -m pytest -n 2 "$@"
