"""Shared fixtures: small concept images made by the tests themselves."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "corridor.png"
sys.path.insert(0, str(Path(__file__).parent))  # tests/scenes.py, tests/clients.py


@pytest.fixture(scope="session")
def example_image() -> Path:
    return EXAMPLE


@pytest.fixture()
def small_sidecar(tmp_path: Path) -> Path:
    """A copy of the example with a sidecar that makes it quick: few, small frames."""
    image = tmp_path / "corridor.png"
    image.write_bytes(EXAMPLE.read_bytes())
    (tmp_path / "corridor.toml").write_text("[camera]\nwidth = 208\nheight = 120\n[path]\nframes = 9\n")
    return image
