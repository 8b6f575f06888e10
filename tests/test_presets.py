import pytest

from lyra_assets.errors import LyraAssetsError
from lyra_assets.presets import available_presets, load_preset

BUILT_IN = {"walk_forward", "look_around", "orbit", "walk_and_return", "strafe", "zoom_in_out"}


def test_built_in_presets_all_load():
    names = set(available_presets())
    assert BUILT_IN <= names
    for name in names:
        preset = load_preset(name)
        assert preset.schema_version == 1 and preset.description


def test_inherits_merges_parent_and_child():
    child = load_preset("walk_and_return")
    assert child.path.motion == "out_and_back"
    assert child.camera.width == 832 and child.scene.eye_height_m == 1.6  # from walk_forward


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(LyraAssetsError, match="unknown preset 'walk_fwd'.*look_around.*walk_forward"):
        load_preset("walk_fwd")


def test_typo_names_the_key_and_the_file(tmp_path):
    (tmp_path / "mine.toml").write_text('schema_version = 1\n[path]\nmotion = "dolly"\ndistanse_m = 3\n')
    with pytest.raises(LyraAssetsError, match=r"mine\.toml.*unknown key 'path\.distanse_m'.*distance_m"):
        load_preset("mine", [tmp_path])


def test_bad_value_and_bad_toml(tmp_path):
    (tmp_path / "a.toml").write_text('schema_version = 1\n[path]\nmotion = "fly"\n')
    (tmp_path / "b.toml").write_text('schema_version = 1\n[path\n')
    (tmp_path / "c.toml").write_text('schema_version = 2\n')
    with pytest.raises(LyraAssetsError, match=r"a\.toml: path\.motion"):
        load_preset("a", [tmp_path])
    with pytest.raises(LyraAssetsError, match=r"b\.toml: not valid TOML"):
        load_preset("b", [tmp_path])
    with pytest.raises(LyraAssetsError, match=r"c\.toml: schema_version"):
        load_preset("c", [tmp_path])


def test_user_folder_inherits_built_in_and_cycles_are_caught(tmp_path, monkeypatch):
    (tmp_path / "slow_walk.toml").write_text('schema_version = 1\ninherits = "walk_forward"\n[path]\nframes = 41\n')
    (tmp_path / "x.toml").write_text('schema_version = 1\ninherits = "y"\n')
    (tmp_path / "y.toml").write_text('schema_version = 1\ninherits = "x"\n')
    monkeypatch.setenv("LYRA_ASSETS_PRESETS", str(tmp_path))
    assert load_preset("slow_walk").path.frames == 41
    with pytest.raises(LyraAssetsError, match="inherits itself"):
        load_preset("x")


def test_overrides_are_validated_and_named():
    preset = load_preset("walk_forward", overrides={"camera": {"hfov_deg": 75}}, overrides_source="s.toml")
    assert preset.camera.hfov_deg == 75
    with pytest.raises(LyraAssetsError, match=r"s\.toml: unknown key 'camera\.fov'"):
        load_preset("walk_forward", overrides={"camera": {"fov": 75}}, overrides_source="s.toml")
