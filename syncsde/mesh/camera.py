"""Look-at cameras from azimuth / elevation / distance, and per-view rasterization of a mesh.

World: +y up, the object at the origin; azimuth 0 looks at the +z face, azimuth 90 at the +x
face; the eye is ``d (cos e sin a, sin e, cos e cos a)``. View space: x to the right of the
image, y up, z the depth along the viewing direction (> 0 in front). Pixels: (i, j) has its
centre at ``x = j + 0.5``, ``y = i + 0.5`` with i going down.

- perspective (the authors' SyncTweedies/SyncSDE cameras, pytorch3d ``FoVPerspectiveCameras``
  fov 60 at distance 2): ``x_ndc = x / (z tan(fov/2))``;
- orthographic (SyncMVD's): ``x_ndc = x / scale``.
Then ``x_pix = (x_ndc + 1) W / 2``, ``y_pix = (1 - y_ndc) H / 2``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from syncsde.mesh.io import Mesh
from syncsde.ops.raster import rasterize


@dataclass(frozen=True)
class Camera:
    azimuth: float = 0.0      # degrees
    elevation: float = 0.0    # degrees, in (-90, 90)
    distance: float = 2.0
    perspective: bool = True
    fov: float = 60.0         # degrees (perspective)
    scale: float = 1.0        # half extent of the view box (orthographic)

    def __post_init__(self):
        for name in ("azimuth", "elevation", "distance", "fov", "scale"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"camera {name} must be finite; got {getattr(self, name)!r}")
        if not -90.0 < self.elevation < 90.0:
            raise ValueError(f"camera elevation must lie in (-90, 90) degrees; got {self.elevation}")
        if not self.distance > 0 or not 0 < self.fov < 180 or not self.scale > 0:
            raise ValueError(f"camera needs distance > 0, 0 < fov < 180 and scale > 0; got {self}")

    def eye(self) -> np.ndarray:
        a, e = math.radians(self.azimuth), math.radians(self.elevation)
        return self.distance * np.array([math.cos(e) * math.sin(a), math.sin(e),
                                         math.cos(e) * math.cos(a)])

    def axes(self) -> np.ndarray:
        """Rows: right, up, forward (world coordinates, orthonormal)."""
        f = -self.eye() / self.distance
        r = np.cross(f, [0.0, 1.0, 0.0])
        r /= np.linalg.norm(r)
        u = np.cross(r, f)
        return np.stack([r, u, f])

    def to_view(self, points: np.ndarray) -> np.ndarray:
        """``[..., 3]`` world points -> view coordinates (x right, y up, z depth)."""
        return (np.asarray(points, np.float64) - self.eye()) @ self.axes().T

    def to_pixels(self, points: np.ndarray, height: int, width: int) -> np.ndarray:
        """``[..., 3]`` world points -> ``(x_pix, y_pix, depth)``."""
        v = self.to_view(points)
        if self.perspective:
            t = math.tan(math.radians(self.fov) / 2)
            with np.errstate(divide="ignore", invalid="ignore"):
                xn, yn = v[..., 0] / (v[..., 2] * t), v[..., 1] / (v[..., 2] * t)
        else:
            xn, yn = v[..., 0] / self.scale, v[..., 1] / self.scale
        return np.stack([(xn + 1) * width / 2, (1 - yn) * height / 2, v[..., 2]], -1)


def default_cameras(distance: float = 2.0, perspective: bool = True) -> list[Camera]:
    """The authors' 10 views in their order: azimuths 180, 225, ..., 135 at elevation 0 (view 0
    is the back view), then (elevation 30, azimuth 0) and (30, 180)."""
    ring = [a % 360 for a in (-180, -135, -90, -45, 0, 45, 90, 135)]
    cams = [Camera(float(a), 0.0, distance, perspective) for a in ring]
    return cams + [Camera(0.0, 30.0, distance, perspective), Camera(180.0, 30.0, distance, perspective)]


def direction_suffix(cam: Camera) -> str:
    """The authors' prompt suffix: front (|azimuth| <= 30), back (>= 120), else side."""
    a = abs(((cam.azimuth + 180.0) % 360.0) - 180.0)
    if cam.elevation > 30:
        return "top"
    return "front" if a <= 30 else "back" if a >= 120 else "side"


@dataclass
class ViewRaster:
    """Everything one camera sees of a mesh at ``height x width``."""

    face: np.ndarray    # [H, W] int64, -1 background
    bary: np.ndarray    # [H, W, 3] float32 (perspective-correct)
    depth: np.ndarray   # [H, W] float32 view depth, 0 background
    uv: np.ndarray      # [H, W, 2] float64 interpolated UV (0 background)
    cos: np.ndarray     # [H, W] float64 |cos| between the view ray and the face normal
    points: np.ndarray  # [H, W, 3] float64 world position (0 background)

    @property
    def mask(self) -> np.ndarray:
        return self.face >= 0


def rasterize_view(mesh: Mesh, cam: Camera, height: int, width: int) -> ViewRaster:
    corners = cam.to_pixels(mesh.vertices[mesh.faces], height, width)
    frag = rasterize(corners, height, width, perspective=cam.perspective,
                     near=1e-6 if cam.perspective else 0.0)
    fg = frag.face_id >= 0
    idx = np.nonzero(fg.reshape(-1))[0]
    f = frag.face_id.reshape(-1)[idx]
    b = frag.bary.reshape(-1, 3)[idx].astype(np.float64)
    uv = np.zeros((height * width, 2))
    pts = np.zeros((height * width, 3))
    cos = np.zeros(height * width)
    tri_uv = mesh.corner_uvs()[f]                 # [n, 3, 2]
    tri_p = mesh.vertices[mesh.faces[f]]          # [n, 3, 3]
    uv[idx] = (b[:, :, None] * tri_uv).sum(1)
    p = (b[:, :, None] * tri_p).sum(1)
    pts[idx] = p
    ray = cam.eye() - p if cam.perspective else np.broadcast_to(-cam.axes()[2], p.shape)
    ray = ray / np.maximum(np.linalg.norm(ray, axis=-1, keepdims=True), 1e-300)
    cos[idx] = np.abs((ray * mesh.face_normals()[f]).sum(-1))
    uv, pts, cos = uv.reshape(height, width, 2), pts.reshape(height, width, 3), cos.reshape(height, width)
    return ViewRaster(frag.face_id, frag.bary, frag.depth, uv, cos, pts)


def depth_image(r: ViewRaster, lo: float = 0.1) -> np.ndarray:
    """The depth ControlNet's input: normalized inverse depth ``[H, W]`` in [lo, 1] on the mesh
    (nearest point 1, farthest ``lo``, so it stays apart from the background) and 0 on the
    background."""
    fg = r.mask
    out = np.zeros(r.depth.shape, np.float64)
    if fg.any():
        inv = 1.0 / r.depth[fg].astype(np.float64)
        span = inv.max() - inv.min()
        out[fg] = lo + (1 - lo) * ((inv - inv.min()) / span if span > 0 else np.ones_like(inv))
    return out


def rasterize_uv(mesh: Mesh, size: int):
    """UV-space rasterization at ``size x size`` texels: ``(texel face [T, T] int64 (-1 outside
    every face), barycentrics [T, T, 3])``; UV v points up, texel row 0 is the top."""
    uv = mesh.corner_uvs()
    corners = np.stack([uv[..., 0] * size, (1 - uv[..., 1]) * size, np.zeros(uv.shape[:2])], -1)
    frag = rasterize(corners, size, size, perspective=False, near=0.0)
    return frag.face_id, frag.bary


__all__ = ["Camera", "default_cameras", "direction_suffix", "ViewRaster", "rasterize_view",
           "depth_image", "rasterize_uv"]
