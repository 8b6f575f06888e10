"""Reading concept images safely: limits before decoding, EXIF rotation, every colour mode to 8-bit RGB."""
from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

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


def load_concept_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> ConceptImage:
    path = Path(path)
    if not path.is_file():
        raise LyraAssetsError(f"{path}: no such image file; give the path of a PNG or JPEG concept image.")
    size = path.stat().st_size
    if size == 0:
        raise LyraAssetsError(f"{path}: the file is empty (0 bytes); re-export the image and try again.")
    if size > MAX_BYTES:
        raise LyraAssetsError(
            f"{path}: {size / 2**20:.0f} MiB is over the {MAX_BYTES // 2**20} MiB limit; save a smaller image."
        )
    data = path.read_bytes()
    return decode_concept_image(data, name=path.stem, source=str(path), max_pixels=max_pixels)


def decode_concept_image(data: bytes, name: str, source: str, max_pixels: int = MAX_PIXELS) -> ConceptImage:
    try:
        with warnings.catch_warnings():
            # Pillow warns (not raises) between its own limit and twice it; our limit is checked below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                raise LyraAssetsError(
                    f"{source}: {width}x{height} = {width * height:,} pixels is over the limit of "
                    f"{max_pixels:,} pixels (a possible decompression bomb); downscale the image."
                )
            img.load()
            img = ImageOps.exif_transpose(img)
    except LyraAssetsError:
        raise
    except Image.DecompressionBombError as exc:
        raise LyraAssetsError(f"{source}: refused as a decompression bomb ({exc}); downscale the image.") from exc
    except UnidentifiedImageError as exc:
        raise LyraAssetsError(f"{source}: not an image Pillow can read; give a PNG or JPEG file.") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise LyraAssetsError(f"{source}: the image is damaged or truncated ({exc}); re-export it.") from exc
    if min(img.size) < MIN_SIDE:
        raise LyraAssetsError(
            f"{source}: {img.size[0]}x{img.size[1]} is too small; concept images need at least "
            f"{MIN_SIDE} pixels on each side."
        )
    return ConceptImage(pixels=to_rgb8(img), name=name, sha256=hashlib.sha256(data).hexdigest())


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
