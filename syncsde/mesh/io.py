"""Meshes for texturing: loading (OBJ, PLY, GLB/GLTF through trimesh), checks, normalization to
the unit sphere, one UV atlas for the whole mesh, UV islands, and textured outputs (OBJ+MTL+PNG,
GLB).

A :class:`Mesh` keeps positions and UVs as two index sets over the same faces (``faces`` into
``vertices``, ``face_uvs`` into ``uvs``), so UV seams need no vertex splitting. UV convention:
``u`` to the right, ``v`` up; texel ``(r, c)`` of a ``T x T`` texture covers
``u in [c/T, (c+1)/T]``, ``v in [1 - (r+1)/T, 1 - r/T]`` (row 0 is the top of the image, as in
OBJ/GLB viewers).

Atlases: a mesh whose single part has UVs inside [0, 1] keeps them; several parts (or
materials) that all have UVs are packed side by side into one atlas (each part's UV square
scaled into its own cell of a grid); anything else gets a fresh atlas from xatlas, or, without
xatlas, one small triangle per face in a grid (``atlas="per_triangle"``).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from syncsde.atomic import atomic_path, atomic_save_png, atomic_write_text


class MeshError(ValueError):
    """A mesh file or array that cannot be textured; the message names the file and the problem."""


@dataclass
class Mesh:
    vertices: np.ndarray   # [V, 3] float64
    faces: np.ndarray      # [F, 3] int64 into vertices
    uvs: np.ndarray        # [U, 2] float64 in [0, 1]
    face_uvs: np.ndarray   # [F, 3] int64 into uvs
    name: str = "mesh"

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    def face_normals(self) -> np.ndarray:
        """Unit normals ``[F, 3]`` (counter-clockwise faces point outwards)."""
        v = self.vertices[self.faces]
        n = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
        return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-300)

    def corner_uvs(self) -> np.ndarray:
        """``[F, 3, 2]`` UV of every face corner."""
        return self.uvs[self.face_uvs]

    def islands(self) -> np.ndarray:
        """``[F]`` int64: the UV island (connected component of faces sharing a UV vertex)."""
        return _components(self.face_uvs, len(self.uvs))


def _components(face_idx: np.ndarray, n_nodes: int) -> np.ndarray:
    """Connected components of faces joined through shared node indices (union-find)."""
    parent = np.arange(n_nodes, dtype=np.int64)

    def find(a: int) -> int:
        root = a
        while parent[root] != root:
            root = parent[root]
        while parent[a] != root:
            parent[a], a = root, parent[a]
        return root

    for a, b, c in face_idx.tolist():
        ra, rb, rc = find(a), find(b), find(c)
        r = min(ra, rb, rc)
        parent[ra] = parent[rb] = parent[rc] = r
    roots = np.array([find(int(face_idx[f, 0])) for f in range(len(face_idx))], dtype=np.int64)
    _, labels = np.unique(roots, return_inverse=True)
    return labels.astype(np.int64)


def check_mesh(vertices, faces, source: str = "mesh", min_area: float = 1e-14) -> tuple:
    """Validated ``(vertices float64 [V,3], faces int64 [F,3])``; :class:`MeshError` naming
    ``source`` for no faces, non-finite vertices, out-of-range indices or degenerate faces."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) == 0:
        raise MeshError(f"{source}: vertices must be a non-empty [V, 3] array; got shape {v.shape}")
    if f.size == 0:
        raise MeshError(f"{source}: the mesh has no faces")
    if f.ndim != 2 or f.shape[1] != 3 or f.dtype.kind not in "iu":
        raise MeshError(f"{source}: faces must be an integer [F, 3] array (triangles); got "
                        f"shape {f.shape}, dtype {f.dtype}")
    bad = ~np.isfinite(v).all(axis=1)
    if bad.any():
        raise MeshError(f"{source}: {int(bad.sum())} vertices are NaN or infinite (first: vertex "
                        f"{int(np.argmax(bad))})")
    f = f.astype(np.int64)
    out = (f < 0) | (f >= len(v))
    if out.any():
        k = int(np.argmax(out.any(axis=1)))
        raise MeshError(f"{source}: face {k} has vertex index {f[k].tolist()} outside "
                        f"[0, {len(v)})")
    p = v[f]
    area = 0.5 * np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1)
    scale = max(float(np.ptp(v, axis=0).max()), 1e-300)
    degenerate = area <= min_area * scale * scale
    if degenerate.all():
        raise MeshError(f"{source}: all {len(f)} faces are degenerate (zero area)")
    if degenerate.any():
        raise MeshError(f"{source}: {int(degenerate.sum())} of {len(f)} faces are degenerate "
                        f"(zero area; first: face {int(np.argmax(degenerate))}); remove them "
                        "(e.g. trimesh's update_faces(nondegenerate_faces()))")
    return v, f


def normalize_unit_sphere(vertices: np.ndarray) -> np.ndarray:
    """Centred at the vertex mean and scaled so the largest vertex norm is 1 (the authors'
    SyncTweedies/SyncSDE convention)."""
    c = vertices - vertices.mean(axis=0)
    r = float(np.linalg.norm(c, axis=1).max())
    return c / r if r > 0 else c


def per_triangle_atlas(n_faces: int, margin: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """One right triangle per face in a ``ceil(sqrt(F))`` grid, with a ``margin`` (fraction of
    a cell) on every side so that no two faces share a texel at moderate resolutions."""
    n = max(1, math.ceil(math.sqrt(n_faces)))
    k = np.arange(n_faces)
    r, c = k // n, k % n
    cell = 1.0 / n
    lo, hi = margin * cell, (1 - margin) * cell
    u0, v0 = c * cell, 1.0 - (r + 1) * cell
    uvs = np.stack([np.stack([u0 + lo, v0 + lo], 1), np.stack([u0 + hi, v0 + lo], 1),
                    np.stack([u0 + lo, v0 + hi], 1)], 1).reshape(-1, 2)
    return uvs, np.arange(3 * n_faces, dtype=np.int64).reshape(n_faces, 3)


def xatlas_atlas(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(uvs, face_uvs)`` from xatlas (faces keep their order)."""
    import xatlas

    vmap, idx, uvs = xatlas.parametrize(vertices.astype(np.float32), faces.astype(np.uint32))
    # xatlas returns new vertices (vmap) and its own index buffer in the same face order
    if len(idx) != len(faces) or not np.array_equal(vmap[idx], faces):
        raise MeshError("xatlas changed the face order or connectivity; use atlas='per_triangle'")
    return uvs.astype(np.float64), idx.astype(np.int64)


def make_atlas(vertices, faces, method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    if method not in ("auto", "xatlas", "per_triangle"):
        raise ValueError(f"atlas must be 'auto', 'xatlas' or 'per_triangle'; got {method!r}")
    if method in ("auto", "xatlas"):
        try:
            return xatlas_atlas(vertices, faces)
        except ImportError:
            if method == "xatlas":
                raise ImportError("atlas='xatlas' needs the xatlas package: pip install "
                                  "'syncsde[mesh]'") from None
    return per_triangle_atlas(len(faces))


def _part_uvs(geom) -> np.ndarray | None:
    uv = getattr(getattr(geom, "visual", None), "uv", None)
    if uv is None:
        return None
    uv = np.asarray(uv, dtype=np.float64)
    if uv.ndim != 2 or uv.shape != (len(geom.vertices), 2) or not np.isfinite(uv).all():
        return None
    return uv


def _pack(parts_uv: list[np.ndarray]) -> list[np.ndarray]:
    """Each part's UVs (wrapped into [0, 1]) scaled into its own cell of a square grid."""
    n = math.ceil(math.sqrt(len(parts_uv)))
    out = []
    for k, uv in enumerate(parts_uv):
        uv = np.clip(uv, 0.0, 1.0)
        r, c = k // n, k % n
        out.append(np.stack([(c + uv[:, 0]) / n, 1.0 - (r + 1 - uv[:, 1]) / n], 1))
    return out


def load_mesh(path: str | os.PathLike, atlas: str = "auto", normalize: bool = True) -> Mesh:
    """Loads OBJ / PLY / GLB / GLTF (any format trimesh reads) as one :class:`Mesh`.

    Scenes with several parts or materials are merged (world transforms applied) into one mesh
    with one atlas. Raises :class:`MeshError` naming the file for anything that is not a usable
    triangle mesh.
    """
    path = Path(path)
    src = str(path)
    if not path.is_file():
        raise MeshError(f"{src}: no such file")
    try:
        import trimesh
    except ImportError:
        raise ImportError("loading meshes needs trimesh: pip install 'syncsde[mesh]'") from None
    try:
        loaded = trimesh.load(src, process=False, maintain_order=True)
    except Exception as e:  # noqa: BLE001 - trimesh raises many types for unreadable files
        raise MeshError(f"{src}: not a readable mesh ({type(e).__name__}: {e})") from None
    if isinstance(loaded, trimesh.Scene):
        geoms = []
        for node in loaded.graph.nodes_geometry:
            transform, name = loaded.graph[node]
            g = loaded.geometry[name]
            if isinstance(g, trimesh.Trimesh):
                g = g.copy()
                g.apply_transform(transform)
                geoms.append(g)
    elif isinstance(loaded, trimesh.Trimesh):
        geoms = [loaded]
    elif type(loaded).__name__ == "PointCloud":
        raise MeshError(f"{src}: the mesh has no faces (only points)")
    else:
        raise MeshError(f"{src}: holds a {type(loaded).__name__}, not a triangle mesh")
    geoms = [g for g in geoms if len(g.faces) > 0]
    if not geoms:
        raise MeshError(f"{src}: the mesh has no faces")
    verts, faces, uvs, offset = [], [], [], 0
    for g in geoms:
        v, f = check_mesh(g.vertices, g.faces, src)
        verts.append(v)
        faces.append(f + offset)
        uvs.append(_part_uvs(g))
        offset += len(v)
    v = np.concatenate(verts)
    f = np.concatenate(faces)
    v, f = check_mesh(v, f, src)
    if normalize:
        v = normalize_unit_sphere(v)
    if all(u is not None for u in uvs):
        if len(uvs) == 1 and uvs[0].min() >= 0.0 and uvs[0].max() <= 1.0:
            uv = uvs[0]
        else:
            uv = np.concatenate(_pack(uvs))
        return Mesh(v, f, uv, f.copy(), name=path.stem)
    uv, fuv = make_atlas(v, f, atlas)
    return Mesh(v, f, uv, fuv, name=path.stem)


def mesh_from_arrays(vertices, faces, uvs=None, face_uvs=None, atlas: str = "auto",
                     normalize: bool = True, name: str = "mesh") -> Mesh:
    """A :class:`Mesh` from arrays (checked like a file; UVs made when not given)."""
    v, f = check_mesh(vertices, faces, name)
    if normalize:
        v = normalize_unit_sphere(v)
    if uvs is None:
        uv, fuv = make_atlas(v, f, atlas)
    else:
        uv = np.asarray(uvs, dtype=np.float64)
        fuv = f.copy() if face_uvs is None else np.asarray(face_uvs, dtype=np.int64)
        if uv.ndim != 2 or uv.shape[1] != 2 or not np.isfinite(uv).all():
            raise MeshError(f"{name}: uvs must be a finite [U, 2] array; got shape {uv.shape}")
        if fuv.shape != f.shape or fuv.min() < 0 or fuv.max() >= len(uv):
            raise MeshError(f"{name}: face_uvs must be [F, 3] indices into uvs")
    return Mesh(v, f, uv, fuv, name=name)


# ---- outputs ---------------------------------------------------------------------------
def save_obj(mesh: Mesh, texture, folder: str | os.PathLike, stem: str = "textured",
             pnginfo=None) -> dict:
    """Writes ``stem.obj``, ``stem.mtl`` and ``stem.png`` (``texture`` [T, T, 3] uint8)
    atomically; returns their paths."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    png, mtl, obj = folder / f"{stem}.png", folder / f"{stem}.mtl", folder / f"{stem}.obj"
    atomic_save_png(Image.fromarray(np.asarray(texture, dtype=np.uint8)), png, pnginfo=pnginfo)
    atomic_write_text(mtl, f"newmtl material0\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nillum 1\n"
                           f"map_Kd {png.name}\n")
    lines = [f"mtllib {mtl.name}", "usemtl material0"]
    lines += [f"v {x:.7g} {y:.7g} {z:.7g}" for x, y, z in mesh.vertices.tolist()]
    lines += [f"vt {u:.7g} {v:.7g}" for u, v in mesh.uvs.tolist()]
    lines += [f"f {a + 1}/{ta + 1} {b + 1}/{tb + 1} {c + 1}/{tc + 1}"
              for (a, b, c), (ta, tb, tc) in zip(mesh.faces.tolist(), mesh.face_uvs.tolist())]
    atomic_write_text(obj, "\n".join(lines) + "\n")
    return {"obj": str(obj), "mtl": str(mtl), "png": str(png)}


def save_glb(mesh: Mesh, texture, path: str | os.PathLike) -> str:
    """A binary glTF with the texture embedded (vertices split at UV seams)."""
    import trimesh
    from PIL import Image

    corner_v = mesh.vertices[mesh.faces].reshape(-1, 3)
    corner_uv = mesh.uvs[mesh.face_uvs].reshape(-1, 2)
    key = np.concatenate([mesh.faces.reshape(-1, 1), mesh.face_uvs.reshape(-1, 1)], 1)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    visual = trimesh.visual.TextureVisuals(
        uv=corner_uv[first], image=Image.fromarray(np.asarray(texture, dtype=np.uint8)))
    tm = trimesh.Trimesh(corner_v[first], inverse.reshape(-1, 3), visual=visual, process=False)
    data = tm.export(file_type="glb")
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return str(path)


__all__ = ["Mesh", "MeshError", "check_mesh", "load_mesh", "mesh_from_arrays",
           "normalize_unit_sphere", "per_triangle_atlas", "xatlas_atlas", "make_atlas",
           "save_obj", "save_glb"]
