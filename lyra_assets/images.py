"""Reading concept images safely: limits before decoding, EXIF rotation, every colour mode to 8-bit RGB."""
from __future__ import annotations

import hashlib
import io
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import LyraAssetsError

MAX_PIXELS = 64_000_000  # refuse decompression bombs before decoding
MAX_BYTES = 256 * 1024 * 1024
MIN_SIDE = 64


@dataclass(frozen=True)
class ConceptImage:
    """The user's image as 8-bit RGB, upright, with the hash of the bytes it was read from."""

    pixels: np.ndarray  # (H, W, 3) uint8
    name: str  # file stem, used to name outputs
    sha256: str

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


@dataclass(frozen=True)
class ImageProbe:
    """What a job needs to know of its image before any work: its hash and size, from the header alone."""

    sha256: str
    width: int
    height: int


def probe_concept_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> ImageProbe:
    """The file's checks and its header, without decoding the pixels (cheap even for a 64 MP image)."""
    path = Path(path)
    data = _read_image_file(path)
    with _opened(data, str(path), max_pixels) as img:
        width, height = img.size
    return ImageProbe(hashlib.sha256(data).hexdigest(), width, height)


def load_concept_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> ConceptImage:
    path = Path(path)
    return decode_concept_image(_read_image_file(path), name=path.stem, source=str(path), max_pixels=max_pixels)


def decode_concept_image(data: bytes, name: str, source: str, max_pixels: int = MAX_PIXELS) -> ConceptImage:
    with _opened(data, source, max_pixels) as img:
        try:
            img.load()
            img = ImageOps.exif_transpose(img)
        except Image.DecompressionBombError as exc:
            raise LyraAssetsError(f"{source}: refused as a decompression bomb ({exc}); downscale the image.") from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise LyraAssetsError(f"{source}: the image is damaged or truncated ({exc}); re-export it.") from exc
        return ConceptImage(pixels=to_rgb8(img), name=name, sha256=hashlib.sha256(data).hexdigest())


def _read_image_file(path: Path) -> bytes:
    if not path.exists():
        raise LyraAssetsError(f"{path}: no such image file; give the path of a PNG or JPEG concept image.")
    if not path.is_file():
        raise LyraAssetsError(f"{path}: not a regular file (a folder, a pipe or a device); give the path of a "
                              f"PNG or JPEG concept image.")
    size = path.stat().st_size
    if size == 0:
        raise LyraAssetsError(f"{path}: the file is empty (0 bytes); re-export the image and try again.")
    if size > MAX_BYTES:
        raise LyraAssetsError(
            f"{path}: {size / 2**20:.0f} MiB is over the {MAX_BYTES // 2**20} MiB limit; save a smaller image."
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise LyraAssetsError(f"{path}: cannot be read ({exc.strerror or exc}); check its permissions.") from exc


@contextmanager
def _opened(data: bytes, source: str, max_pixels: int) -> Iterator[Image.Image]:
    """Pillow's lazy open with our limits checked on the header, before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            # Pillow warns (not raises) between its own limit and twice it; our limit is checked below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise LyraAssetsError(f"{source}: refused as a decompression bomb ({exc}); downscale the image.") from exc
    except UnidentifiedImageError as exc:
        raise LyraAssetsError(f"{source}: not an image Pillow can read; give a PNG or JPEG file.") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise LyraAssetsError(f"{source}: the image is damaged or truncated ({exc}); re-export it.") from exc
    width, height = img.size
    if width * height > max_pixels:
        raise LyraAssetsError(
            f"{source}: {width}x{height} = {width * height:,} pixels is over the limit of "
            f"{max_pixels:,} pixels (a possible decompression bomb); downscale the image."
        )
    if min(width, height) < MIN_SIDE:
        raise LyraAssetsError(f"{source}: {width}x{height} is too small; concept images need at least "
                              f"{MIN_SIDE} pixels on each side.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield img


def to_rgb8(img: Image.Image) -> np.ndarray:
    """Any Pillow mode to (H, W, 3) uint8 RGB. Alpha is composited over mid grey."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit greyscale: Pillow's convert("L") clips instead of scaling.
        values = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or values.max() > 255 else 255.0
        grey = np.clip(values * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode == "F":
        values = np.asarray(img, dtype=np.float64)
        scale = 255.0 / values.max() if values.max() > 1.0 else 255.0
        grey = np.clip(values * scale + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode == "P" or img.mode == "PA":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (128, 128, 128, 255))
        img = Image.alpha_composite(base, rgba)
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))
