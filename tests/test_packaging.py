"""What `pip install .` ships: every subpackage and the built-in presets (a missing one breaks only
non-editable installs, which the other tests do not use)."""
import tomllib

from conftest import REPO


def test_every_subpackage_is_listed_in_pyproject():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(init.parent.relative_to(REPO).parts) for init in (REPO / "lyra_assets").rglob("__init__.py")}
    assert on_disk | {"lyra_assets.builtin_presets"} == set(config["packages"])
    assert config["package-dir"]["lyra_assets.builtin_presets"] == "presets"
    assert config["package-data"]["lyra_assets.builtin_presets"] == ["*.toml"]
