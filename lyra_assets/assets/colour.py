"""sRGB <-> linear light (IEC 61966-2-1), as arrays and as uint8 lookup tables."""
from __future__ import annotations

import numpy as np


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 decoding of values in 0..1."""
    x = np.asarray(x, np.float64)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(np.asarray(x, np.float64), 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)


SRGB_TO_LINEAR = srgb_to_linear(np.arange(256) / 255.0).astype(np.float32)  # uint8 sRGB -> linear
# linear in 1/65535 steps -> uint8 sRGB: fine enough even where the curve is steepest (12.92 near black:
# 0.05 of a code per step), and a table lookup instead of a power per value.
_LINEAR_TO_SRGB8 = np.clip(linear_to_srgb(np.arange(65536) / 65535.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def to_srgb8(linear: np.ndarray) -> np.ndarray:
    """Linear 0..1 -> uint8 sRGB."""
    return _LINEAR_TO_SRGB8[np.clip(linear * 65535.0 + 0.5, 0, 65535).astype(np.uint16)]

