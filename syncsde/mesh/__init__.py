"""Mesh texturing on any CPU: meshes and atlases (:mod:`.io`), cameras and rasterization
(:mod:`.camera`, C core), texture projections as sparse maps and the texture view set
(:mod:`.views`). Loading files needs the ``mesh`` extra (trimesh, xatlas)."""
from syncsde.mesh.camera import (Camera, ViewRaster, default_cameras, depth_image,
                                 direction_suffix, rasterize_uv, rasterize_view)
from syncsde.mesh.io import (Mesh, MeshError, check_mesh, load_mesh, mesh_from_arrays,
                             normalize_unit_sphere, per_triangle_atlas, save_glb, save_obj)
from syncsde.mesh.views import CSR, TextureEarlierViews, TextureViews, bake_texture

__all__ = ["Camera", "ViewRaster", "default_cameras", "depth_image", "direction_suffix",
           "rasterize_uv", "rasterize_view", "Mesh", "MeshError", "check_mesh", "load_mesh",
           "mesh_from_arrays", "normalize_unit_sphere", "per_triangle_atlas", "save_glb",
           "save_obj", "CSR", "TextureEarlierViews", "TextureViews", "bake_texture"]
