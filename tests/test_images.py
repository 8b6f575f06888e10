"""Bad and unusual concept images: clear errors for the bad ones, correct RGB for the unusual ones."""
import io

import numpy as np
import pytest
from PIL import Image

from lyra_assets.errors import LyraAssetsError
from lyra_assets.images import load_concept_image


def _save(tmp_path, image, name, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


def _gradient(mode="RGB", size=(96, 80)):
    x = np.linspace(0, 255, size[0], dtype=np.uint8)
    rgb = np.stack([np.tile(x, (size[1], 1))] * 3, -1)
    rgb[..., 1] = 100
    return Image.fromarray(rgb).convert(mode)


@pytest.mark.parametrize("name, data, message", [
    ("empty.png", b"", "empty"),
    ("text.png", b"this is not an image at all", "not an image"),
    ("noise.jpg", bytes(range(256)) * 8, "not an image"),
])
def test_bad_files_get_clear_errors(tmp_path, name, data, message):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(LyraAssetsError, match=message):
        load_concept_image(tmp_path / name)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_images(tmp_path, fmt):
    buffer = io.BytesIO()
    _gradient(size=(256, 200)).save(buffer, fmt)
    data = buffer.getvalue()
    (tmp_path / "cut.img").write_bytes(data[: len(data) // 2])
    with pytest.raises(LyraAssetsError, match="damaged or truncated"):
        load_concept_image(tmp_path / "cut.img")


def test_missing_file(tmp_path):
    with pytest.raises(LyraAssetsError, match="no such image"):
        load_concept_image(tmp_path / "nope.png")


def test_tiny_image(tmp_path):
    path = _save(tmp_path, Image.new("RGB", (1, 1)), "one.png")
    with pytest.raises(LyraAssetsError, match="1x1 is too small"):
        load_concept_image(path)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = _save(tmp_path, Image.new("L", (9000, 9000)), "bomb.png", optimize=True)
    assert path.stat().st_size < 200_000  # tiny file, 81 megapixels
    with pytest.raises(LyraAssetsError, match="over the limit of 64,000,000 pixels"):
        load_concept_image(path)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "RGBA", "LA", "I;16", "I"])
def test_every_mode_becomes_rgb8(tmp_path, mode):
    if mode in ("I;16", "I"):
        ramp = np.tile(np.linspace(0, 65535, 96), (80, 1))
        image = Image.fromarray(ramp.astype(np.uint16 if mode == "I;16" else np.int32))
        assert image.mode == mode
    else:
        image = _gradient(mode)
    fmt = "TIFF" if mode in ("CMYK", "I") else "PNG"
    path = _save(tmp_path, image, f"img.{fmt.lower()}", format=fmt)
    loaded = load_concept_image(path)
    assert loaded.pixels.dtype == np.uint8 and loaded.pixels.shape == (80, 96, 3)
    grey = loaded.pixels.mean(axis=2)
    assert grey[:, -1].mean() > grey[:, 0].mean() + 60  # the ramp survived, not clipped to white or black


def test_16bit_png_scaled_not_clipped(tmp_path):
    ramp = np.full((80, 96), 32768, np.uint16)
    path = _save(tmp_path, Image.fromarray(ramp), "mid.png")
    assert abs(int(load_concept_image(path).pixels[0, 0, 0]) - 128) <= 1


def test_exif_rotation_is_honoured(tmp_path):
    image = _gradient(size=(120, 80))  # landscape, bright on the right
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _save(tmp_path, image, "rot.jpg", exif=exif.tobytes(), quality=95)
    loaded = load_concept_image(path)
    assert loaded.pixels.shape[:2] == (120, 80)  # portrait once upright
    grey = loaded.pixels.mean(axis=2)
    assert grey[-1].mean() > grey[0].mean() + 60  # bright side now at the bottom


def test_hash_is_of_the_bytes(tmp_path):
    path = _save(tmp_path, _gradient(), "a.png")
    import hashlib
    assert load_concept_image(path).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
