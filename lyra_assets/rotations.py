"""Rotations as unit quaternions (w, x, y, z), in numpy: scipy.spatial would double the import time.

Used by camera paths (slerp between poses) and by Gaussian splats (their axes).
"""
from __future__ import annotations

import math

import numpy as np


def quaternion_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton products a * b of (N, 4) quaternions: the rotation b, then a."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], axis=-1)


def quaternion_matrices(q: np.ndarray) -> np.ndarray:
    """(N, 3, 3) rotation matrices of (N, 4) unit quaternions."""
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
                     2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
                     2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], axis=-1).reshape(-1, 3, 3)


def quaternion_from_matrix(R: np.ndarray) -> np.ndarray:
    """The unit quaternion of one rotation matrix, from its largest diagonal term (stable for any angle)."""
    trace = np.trace(R)
    i = int(np.argmax([trace, R[0, 0], R[1, 1], R[2, 2]]))
    if i == 0:
        w = math.sqrt(1.0 + trace) / 2
        q = [w, (R[2, 1] - R[1, 2]) / (4 * w), (R[0, 2] - R[2, 0]) / (4 * w), (R[1, 0] - R[0, 1]) / (4 * w)]
    else:
        a, b, c = (i - 1, i % 3, (i + 1) % 3)
        v = math.sqrt(1.0 + R[a, a] - R[b, b] - R[c, c]) / 2
        q = [0.0, 0.0, 0.0, 0.0]
        q[0] = (R[c, b] - R[b, c]) / (4 * v)
        q[1 + a], q[1 + b], q[1 + c] = v, (R[b, a] + R[a, b]) / (4 * v), (R[c, a] + R[a, c]) / (4 * v)
    return np.array(q)
