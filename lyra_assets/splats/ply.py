"""The 3DGS PLY format, as Lyra 2.0's reconstruction writes it (see the package's docstring for the layout)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import LyraAssetsError
from ..files import write_atomically
from .gaussians import GaussianSplats

PLY_PROPERTIES = ("x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                  "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")


_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}
_PLY_FORMATS = {"binary_little_endian": "<", "binary_big_endian": ">", "ascii": None}


def read_ply(path: str | Path) -> GaussianSplats:
    """Gaussian splats from a 3DGS PLY (binary either endianness, or ASCII); extra properties are ignored."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LyraAssetsError(f"{path}: cannot read the splat PLY ({exc})") from exc
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise LyraAssetsError(f"{path}: not a PLY file (no 'ply' magic or no end_header)")
    body_start = data.index(b"\n", end) + 1
    header = data[:end].decode("ascii", errors="replace").splitlines()
    byte_order, count, fields = None, None, []
    seen_element = False
    for line in header:
        words = line.split()
        if not words:
            continue
        if words[0] == "format":
            if words[1] not in _PLY_FORMATS:
                raise LyraAssetsError(f"{path}: unknown PLY format {words[1]!r}")
            byte_order = _PLY_FORMATS[words[1]] or "ascii"
        elif words[0] == "element":
            if seen_element:
                break  # only the first element (the Gaussians) is read; 3DGS files have no other
            if words[1] != "vertex":
                raise LyraAssetsError(f"{path}: the first PLY element is {words[1]!r}, expected 'vertex'")
            seen_element, count = True, int(words[2])
        elif words[0] == "property" and seen_element:
            if words[1] == "list":
                raise LyraAssetsError(f"{path}: list property {words[-1]!r} in the vertex element; not 3DGS")
            if words[1] not in _PLY_TYPES:
                raise LyraAssetsError(f"{path}: unknown PLY property type {words[1]!r}")
            fields.append((words[2], _PLY_TYPES[words[1]]))
    if byte_order is None or count is None:
        raise LyraAssetsError(f"{path}: PLY header without a format line or a vertex element")
    missing = [name for name in PLY_PROPERTIES[:3] + PLY_PROPERTIES[6:] if name not in dict(fields)]
    if missing:
        raise LyraAssetsError(f"{path}: not a 3DGS splat PLY; missing properties {', '.join(missing)}")
    if byte_order == "ascii":
        rows = np.loadtxt(data[body_start:].decode("ascii").splitlines()[:count], ndmin=2)
        columns = {name: rows[:, i] for i, (name, _) in enumerate(fields)}
    else:
        dtype = np.dtype([(name, byte_order + kind) for name, kind in fields])
        if len(data) - body_start < count * dtype.itemsize:
            raise LyraAssetsError(f"{path}: truncated; the header announces {count} Gaussians")
        records = np.frombuffer(data, dtype=dtype, count=count, offset=body_start)
        columns = {name: records[name] for name, _ in fields}

    def stack(*names: str) -> np.ndarray:
        return np.stack([columns[n] for n in names], axis=1).astype(np.float32)

    return GaussianSplats(stack("x", "y", "z"), stack("rot_0", "rot_1", "rot_2", "rot_3"),
                          stack("scale_0", "scale_1", "scale_2"), columns["opacity"].astype(np.float32),
                          stack("f_dc_0", "f_dc_1", "f_dc_2"))


def write_ply(path: str | Path, splats: GaussianSplats) -> None:
    """A binary little-endian 3DGS PLY (the layout every 3DGS viewer reads), written atomically."""
    dtype = np.dtype([(name, "<f4") for name in PLY_PROPERTIES])
    records = np.zeros(len(splats), dtype=dtype)
    for names, values in ((("x", "y", "z"), splats.means), (("f_dc_0", "f_dc_1", "f_dc_2"), splats.f_dc),
                          (("scale_0", "scale_1", "scale_2"), splats.log_scales),
                          (("rot_0", "rot_1", "rot_2", "rot_3"), splats.quats)):
        for i, name in enumerate(names):
            records[name] = values[:, i]
    records["opacity"] = splats.opacity_logits
    header = ("ply\nformat binary_little_endian 1.0\n"
              "comment 3D Gaussian splats written by lyra-assets\n"
              f"element vertex {len(splats)}\n"
              + "".join(f"property float {name}\n" for name in PLY_PROPERTIES) + "end_header\n")

    def write(f) -> None:
        f.write(header.encode("ascii"))
        f.write(records.tobytes())

    write_atomically(Path(path), write)
