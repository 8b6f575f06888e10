"""Rendering an open scene (ground plane, standing pop-ups, sky dome) from any camera, on the CPU.

Serial numba kernels that release the GIL, so frames render side by side, each within milliseconds:
- the pop-ups are triangle meshes whose texture coordinates are concept-image pixels; they are rasterised
  with a z-buffer and perspective-correct interpolation, clipped at a near plane, and alpha-tested against
  the concept image's owner map (a fragment survives only where the concept image showed that pop-up), so
  their outlines are as sharp as the labelling however coarse the mesh;
- the ground is a plane, intersected per pixel (exact depth, no tessellation);
- what neither hits is the dome: a direction with no depth (0 = unknown, so fusion ignores the sky).
Where the concept image saw the surface a pixel shows, the colour comes from the concept image itself (full
detail, exact first view); elsewhere from the synthesised ground or dome texture, and the pixel is marked
not observed. The scene is one fixed model, so a revisited pose renders the identical frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

NEAR = 0.05  # metres: triangles are clipped here, in front of the camera
FAR_OWNER = -2  # owner map: the concept pixel shows the dome (sky, or anything beyond the far limit)
GROUND_OWNER = -1  # owner map: the concept pixel shows the ground plane; >= 0: that pop-up
UNSEEN_OWNER = -3  # owner map: too close to a label boundary to trust; nothing takes its colour from it


@dataclass(frozen=True)
class OpenScene:
    """Everything the renderer needs, in the first camera's frame (= world), metres."""

    concept: np.ndarray  # (h, w, 3) uint8 the concept image
    K_concept: np.ndarray  # (3, 3) its intrinsics (the first camera's)
    owner: np.ndarray  # (h, w) int32: what each concept pixel shows: FAR_OWNER, GROUND_OWNER, a pop-up's
    #                    index, or UNSEEN_OWNER
    down: np.ndarray  # (3,) unit vector: world down
    right: np.ndarray  # (3,) unit, horizontal: the ground texture's x axis
    forward: np.ndarray  # (3,) unit, horizontal: the ground texture's z axis
    camera_height: float  # metres from the first camera down to the ground
    far: float  # the ground and the pop-ups end this far from the first camera (square half-side)
    ground: np.ndarray  # (GH, GW, 3) uint8: ground texture over [-far, far]^2 (x: columns, z: rows), for
    #                     where the concept image did not see the ground
    dome: np.ndarray  # (EH, EW, 3) uint8: equirectangular dome, longitude from -pi, latitude from +pi/2
    vertices: np.ndarray  # (V, 3) float64 pop-up mesh vertices
    uv: np.ndarray  # (V, 2) float64 concept-image pixel coordinates of each vertex
    faces: np.ndarray  # (T, 3) int32
    face_owner: np.ndarray  # (T,) int32: the pop-up each face belongs to
    canvas: np.ndarray  # (ch, w, 3) uint8: the concept image, then below it the synthesised textures of walls
    #                     continued beyond the frame; pop-up texture coordinates are pixels of the canvas
    canvas_owner: np.ndarray  # (ch, w) int32: the owner map, then the pop-up each synthesised texture belongs to


def render_open(scene: OpenScene, K: np.ndarray, c2w: np.ndarray, width: int,
                height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB, depth (metres along the camera's z; 0 on the dome) and observed mask from one camera."""
    frame = np.empty((height, width, 3), np.uint8)
    depth = np.empty((height, width), np.float32)
    observed = np.empty((height, width), np.bool_)
    zbuf = np.full((height, width), np.inf, np.float64)
    tex = np.empty((height, width, 2), np.float32)  # read only where zbuf is finite, as is front
    front = np.empty((height, width), np.bool_)
    w2c = np.linalg.inv(c2w)
    if len(scene.faces):
        _rasterise(scene.vertices @ w2c[:3, :3].T + w2c[:3, 3], scene.uv, scene.faces, scene.face_owner,
                   scene.canvas_owner, K, scene.K_concept, zbuf, tex, front)
    _shade(frame, depth, observed, zbuf, tex, front, K, c2w, scene.K_concept, scene.concept, scene.owner,
           scene.canvas, scene.down, scene.right, scene.forward, scene.camera_height, scene.far, scene.ground,
           scene.dome)
    return frame, depth, observed


@numba.njit(cache=True, nogil=True)
def _rasterise(cam, uv, faces, face_owner, owner, K, Kc, zbuf, tex, front):
    """Z-buffer the pop-up triangles: depth, concept-image coordinates, and whether the face is seen from
    the side the concept image saw it from."""
    height, width = zbuf.shape
    oh, ow = owner.shape
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    poly = np.empty((4, 3))
    puv = np.empty((4, 2))
    for f in range(len(faces)):
        a, b, c = faces[f, 0], faces[f, 1], faces[f, 2]
        # Which way the face turns in the concept image (its texture coordinates are concept pixels).
        concept_area = ((uv[b, 0] - uv[a, 0]) * (uv[c, 1] - uv[a, 1])
                        - (uv[b, 1] - uv[a, 1]) * (uv[c, 0] - uv[a, 0]))
        n = 0
        for k in range(3):  # Sutherland-Hodgman against the near plane
            i, j = faces[f, k], faces[f, (k + 1) % 3]
            zi, zj = cam[i, 2], cam[j, 2]
            if zi >= NEAR:
                poly[n, :] = cam[i]
                puv[n, :] = uv[i]
                n += 1
            if (zi >= NEAR) != (zj >= NEAR):
                s = (NEAR - zi) / (zj - zi)
                poly[n, :] = cam[i] + s * (cam[j] - cam[i])
                puv[n, :] = uv[i] + s * (uv[j] - uv[i])
                n += 1
        for t in range(1, n - 1):
            _triangle(poly, puv, 0, t, t + 1, fx, fy, cx, cy, concept_area, face_owner[f], owner, oh, ow,
                      zbuf, tex, front, width, height)


@numba.njit(cache=True, inline="always")
def _triangle(poly, puv, i0, i1, i2, fx, fy, cx, cy, concept_area, piece, owner, oh, ow, zbuf, tex, front,
              width, height):
    x0 = fx * poly[i0, 0] / poly[i0, 2] + cx
    y0 = fy * poly[i0, 1] / poly[i0, 2] + cy
    x1 = fx * poly[i1, 0] / poly[i1, 2] + cx
    y1 = fy * poly[i1, 1] / poly[i1, 2] + cy
    x2 = fx * poly[i2, 0] / poly[i2, 2] + cx
    y2 = fy * poly[i2, 1] / poly[i2, 2] + cy
    area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
    if abs(area) < 1e-12:
        return
    seen_front = (area > 0) == (concept_area > 0)
    iz0, iz1, iz2 = 1.0 / poly[i0, 2], 1.0 / poly[i1, 2], 1.0 / poly[i2, 2]
    # texture coordinates over depth, as locals: loaded from puv they would be loaded again for every pixel
    su0, su1, su2 = puv[i0, 0] * iz0, puv[i1, 0] * iz1, puv[i2, 0] * iz2
    sv0, sv1, sv2 = puv[i0, 1] * iz0, puv[i1, 1] * iz1, puv[i2, 1] * iz2
    inv_area = 1.0 / area
    c0 = max(int(np.floor(min(x0, x1, x2))), 0)
    c1 = min(int(np.ceil(max(x0, x1, x2))), width - 1)
    r0 = max(int(np.floor(min(y0, y1, y2))), 0)
    r1 = min(int(np.ceil(max(y0, y1, y2))), height - 1)
    for row in range(r0, r1 + 1):
        py = row + 0.5
        for col in range(c0, c1 + 1):
            px = col + 0.5
            w0 = ((x1 - px) * (y2 - py) - (y1 - py) * (x2 - px)) * inv_area
            w1 = ((x2 - px) * (y0 - py) - (y2 - py) * (x0 - px)) * inv_area
            w2 = 1.0 - w0 - w1
            if w0 < 0.0 or w1 < 0.0 or w2 < 0.0:
                continue
            iz = w0 * iz0 + w1 * iz1 + w2 * iz2
            z = 1.0 / iz
            if z >= zbuf[row, col]:
                continue
            u = (w0 * su0 + w1 * su1 + w2 * su2) * z
            v = (w0 * sv0 + w1 * sv1 + w2 * sv2) * z
            ou = min(max(int(u), 0), ow - 1)
            ov = min(max(int(v), 0), oh - 1)
            if owner[ov, ou] != piece:  # alpha test: the concept image did not show this pop-up here
                continue
            zbuf[row, col] = z
            tex[row, col, 0] = u
            tex[row, col, 1] = v
            front[row, col] = seen_front


@numba.njit(cache=True, inline="always")
def _sample(image, x, y, out, row, col):
    """Bilinear sample at continuous pixel coordinates (pixel centres at +0.5), clamped at the border."""
    h, w = image.shape[0], image.shape[1]
    x = min(max(x - 0.5, 0.0), w - 1.0)
    y = min(max(y - 0.5, 0.0), h - 1.0)
    xi = min(int(x), w - 2) if w > 1 else 0
    yi = min(int(y), h - 2) if h > 1 else 0
    fx = x - xi
    fy = y - yi
    xj = min(xi + 1, w - 1)
    yj = min(yi + 1, h - 1)
    for k in range(3):
        top = image[yi, xi, k] * (1 - fx) + image[yi, xj, k] * fx
        bottom = image[yj, xi, k] * (1 - fx) + image[yj, xj, k] * fx
        out[row, col, k] = np.uint8(min(top * (1 - fy) + bottom * fy + 0.5, 255.0))


@numba.njit(cache=True, inline="always")
def _from_concept(concept, owner, label, kfx, kfy, kcx, kcy, x, y, z, out, row, col):
    """Colour out[row, col] from the concept image (intrinsics kfx, kfy, kcx, kcy) where the direction or
    point (x, y, z), in the first camera's frame, lands on a concept pixel labelled `label` (ground -1, sky
    -2). Returns whether it did."""
    if z <= 1e-9:
        return False
    iz = 1.0 / z
    u = kfx * x * iz + kcx
    v = kfy * y * iz + kcy
    if not (0 <= u < owner.shape[1] and 0 <= v < owner.shape[0]) or owner[int(v), int(u)] != label:
        return False
    _sample(concept, u, v, out, row, col)
    return True


@numba.njit(cache=True, nogil=True)
def _shade(frame, depth, observed, zbuf, tex, front, K, c2w, Kc, concept, owner, canvas, down, right, forward,
           camera_height, far, ground, dome):
    height, width = zbuf.shape
    gw = ground.shape[1]
    eh, ew = dome.shape[0], dome.shape[1]
    g_density = gw / (2.0 * far)
    # Every constant as a local: the compiler cannot tell these arrays from the ones the loop writes, so it
    # would load them again for every pixel (a quarter of the kernel's time).
    o0, o1, o2 = c2w[0, 3], c2w[1, 3], c2w[2, 3]
    x0, x1, x2 = c2w[0, 0], c2w[1, 0], c2w[2, 0]  # the camera's x axis in the world
    n0, n1, n2 = down[0], down[1], down[2]
    r0, r1, r2 = right[0], right[1], right[2]
    f0, f1, f2 = forward[0], forward[1], forward[2]
    kfx, kfy, kcx, kcy = Kc[0, 0], Kc[1, 1], Kc[0, 2], Kc[1, 2]
    lift = camera_height - (o0 * n0 + o1 * n1 + o2 * n2)  # the camera's height above the ground
    inv_fx, cx = 1.0 / K[0, 0], K[0, 2]
    concept_rows = concept.shape[0]
    for row in range(height):
        yn = (row + 0.5 - K[1, 2]) / K[1, 1]
        # World direction with camera depth 1 (so a ray parameter is the pixel's depth): b + xn * x axis.
        b0 = c2w[0, 1] * yn + c2w[0, 2]
        b1 = c2w[1, 1] * yn + c2w[1, 2]
        b2 = c2w[2, 1] * yn + c2w[2, 2]
        for col in range(width):
            xn = (col + 0.5 - cx) * inv_fx
            d0 = x0 * xn + b0
            d1 = x1 * xn + b1
            d2 = x2 * xn + b2
            dd = d0 * n0 + d1 * n1 + d2 * n2
            t_ground = np.inf
            gx = 0.0
            gz = 0.0
            if dd > 1e-9:
                t = lift / dd
                if t > 0:
                    p0 = o0 + t * d0
                    p1 = o1 + t * d1
                    p2 = o2 + t * d2
                    gx = p0 * r0 + p1 * r1 + p2 * r2
                    gz = p0 * f0 + p1 * f1 + p2 * f2
                    if abs(gx) < far and abs(gz) < far:
                        t_ground = t
            z = zbuf[row, col]
            if t_ground < z:
                depth[row, col] = t_ground
                seen = _from_concept(concept, owner, -1, kfx, kfy, kcx, kcy, o0 + t_ground * d0, o1 + t_ground * d1,
                                     o2 + t_ground * d2, frame, row, col)
                if not seen:
                    _sample(ground, (gx + far) * g_density, (gz + far) * g_density, frame, row, col)
                observed[row, col] = seen
            elif z < np.inf:
                depth[row, col] = z
                _sample(canvas, tex[row, col, 0], tex[row, col, 1], frame, row, col)
                # Below the concept image, the canvas holds synthesised wall: never observed.
                observed[row, col] = front[row, col] and tex[row, col, 1] < concept_rows
            else:
                depth[row, col] = 0.0  # the dome: no surface, so fusion and the collider ignore it
                seen = _from_concept(concept, owner, -2, kfx, kfy, kcx, kcy, d0, d1, d2, frame, row, col)
                if not seen:
                    norm = np.sqrt(d0 * d0 + d1 * d1 + d2 * d2)
                    lon = np.arctan2(d0 * r0 + d1 * r1 + d2 * r2, d0 * f0 + d1 * f1 + d2 * f2)
                    lat = np.arcsin(min(max(-dd / norm, -1.0), 1.0))
                    _sample(dome, (lon + np.pi) / (2 * np.pi) * ew, (np.pi / 2 - lat) / np.pi * eh, frame,
                            row, col)
                observed[row, col] = seen
