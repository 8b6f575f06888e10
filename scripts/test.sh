#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine, then run the whole suite:
#   .venv/          the package with its test extra (editable)
#   node_modules/   the Khronos glTF-Validator (npm, pinned in package-lock.json)
#   .venv-blender/  Blender as a Python module (PyPI bpy 5.0.1, Python 3.11), for the importer tests
# Extra arguments go to pytest, e.g. scripts/test.sh -k layout
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# A regular install (the README's first command) leaves numba's kernel caches in site-packages/lyra_assets;
# that folder would shadow the editable install as a namespace package, so it goes first.
if [ -f .venv/lib/python3.11/site-packages/lyra_assets/__init__.py ]; then
    .venv/bin/python -m pip uninstall --quiet --yes lyra-assets
fi
rm -rf .venv/lib/python3.11/site-packages/lyra_assets
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'

npm ci --no-audit --no-fund --loglevel=error

if ! .venv-blender/bin/python -c "import bpy" 2>/dev/null; then
    "$PYTHON" -m venv .venv-blender
    .venv-blender/bin/python -m pip install --quiet --disable-pip-version-check bpy==5.0.1
fi

exec .venv/bin/python -m pytest -n 2 "$@"
