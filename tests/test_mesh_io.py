"""Mesh loading (OBJ, PLY, GLB), merged parts, normalization, atlases, outputs, bad meshes."""
import numpy as np
import pytest

trimesh = pytest.importorskip("trimesh")

from syncsde.mesh import MeshError, load_mesh, mesh_from_arrays, save_glb, save_obj  # noqa: E402
from syncsde.mesh.io import per_triangle_atlas  # noqa: E402


def sphere():
    return trimesh.creation.icosphere(2)


@pytest.mark.parametrize("ext", ["obj", "ply", "glb"])
def test_load_formats_normalized_with_atlas(tmp_path, ext):
    s = sphere()
    s.vertices = s.vertices * 3.0 + [5.0, -2.0, 1.0]
    path = tmp_path / f"s.{ext}"
    s.export(path)
    m = load_mesh(path)
    assert m.num_faces == len(s.faces)
    np.testing.assert_allclose(m.vertices.mean(0), 0, atol=1e-9)
    assert abs(np.linalg.norm(m.vertices, axis=1).max() - 1) < 1e-9
    assert m.uvs.min() >= 0 and m.uvs.max() <= 1
    assert m.face_uvs.shape == m.faces.shape
    # the shape is kept up to the similarity: pairwise distance ratios
    v0 = (s.vertices - s.vertices.mean(0)) / np.linalg.norm(s.vertices - s.vertices.mean(0), axis=1).max()
    np.testing.assert_allclose(np.sort(np.linalg.norm(m.vertices, axis=1)),
                               np.sort(np.linalg.norm(v0, axis=1)), atol=1e-6)


def test_uvs_of_a_textured_obj_are_kept(tmp_path):
    (tmp_path / "q.obj").write_text(
        "v -1 -1 0\nv 1 -1 0\nv 1 1 0\nv -1 1 0\n"
        "vt 0 0\nvt 0.5 0\nvt 0.5 0.5\nvt 0 0.5\n"
        "f 1/1 2/2 3/3\nf 1/1 3/3 4/4\n")
    m = load_mesh(tmp_path / "q.obj")
    uv = m.corner_uvs()
    assert uv.max() == pytest.approx(0.5) and uv.min() == pytest.approx(0.0)


def test_several_parts_merge_into_one_atlas(tmp_path):
    a = trimesh.creation.box()
    b = trimesh.creation.icosphere(1)
    b.apply_translation([3, 0, 0])
    scene = trimesh.Scene([a, b])
    path = tmp_path / "two.glb"
    scene.export(path)
    m = load_mesh(path)
    assert m.num_faces == len(a.faces) + len(b.faces)
    assert m.uvs.min() >= 0 and m.uvs.max() <= 1
    # transforms applied: x spans the box (-0.5..0.5) and the moved sphere (2..4), y the sphere
    ext = np.ptp(m.vertices, axis=0)
    assert ext[0] / ext[1] == pytest.approx(4.5 / 2, rel=1e-6)
    # and every face has its own UV area (no two parts stacked on one another)
    from syncsde.mesh import rasterize_uv
    tf, _ = rasterize_uv(m, 256)
    assert len(np.unique(tf[tf >= 0])) > 0.9 * m.num_faces


def test_per_triangle_atlas_is_disjoint():
    uv, fuv = per_triangle_atlas(7)
    assert fuv.shape == (7, 3) and uv.shape == (21, 2)
    boxes = uv[fuv]
    lo, hi = boxes.min(1), boxes.max(1)
    for i in range(7):
        for j in range(i + 1, 7):
            assert (hi[i] <= lo[j]).any() or (hi[j] <= lo[i]).any()


@pytest.mark.parametrize("text,problem", [
    ("", "no faces"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\n", "no faces"),
    ("v 0 0 0\nv nan 0 0\nv 0 1 0\nf 1 2 3\n", "NaN"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\nv 2 2 2\nf 1 2 3\nf 1 2 2\n", "degenerate"),
])
def test_bad_obj_files(tmp_path, text, problem):
    p = tmp_path / "bad.obj"
    p.write_text(text)
    with pytest.raises(MeshError, match=problem) as e:
        load_mesh(p)
    assert "bad.obj" in str(e.value)


def test_not_a_mesh_and_missing(tmp_path):
    p = tmp_path / "notes.glb"
    p.write_bytes(b"this is not a gltf file at all")
    with pytest.raises(MeshError, match="notes.glb"):
        load_mesh(p)
    with pytest.raises(MeshError, match="no such file"):
        load_mesh(tmp_path / "missing.obj")


def test_bad_arrays():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], float)
    with pytest.raises(MeshError, match="outside"):
        mesh_from_arrays(v, [[0, 1, 3]], name="arr")
    with pytest.raises(MeshError, match="no faces"):
        mesh_from_arrays(v, np.zeros((0, 3), int))
    with pytest.raises(MeshError, match="NaN"):
        mesh_from_arrays(np.array([[0, 0, 0], [np.inf, 0, 0], [0, 1, 0]]), [[0, 1, 2]])
    with pytest.raises(MeshError, match="degenerate"):
        mesh_from_arrays(v, [[0, 1, 1]])


def test_outputs_reload(tmp_path):
    m = mesh_from_arrays(sphere().vertices, sphere().faces)
    tex = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    paths = save_obj(m, tex, tmp_path)
    back = trimesh.load(paths["obj"], process=False)
    assert len(back.faces) == m.num_faces
    glb = save_glb(m, tex, tmp_path / "t.glb")
    scene = trimesh.load(glb)
    g = list(scene.geometry.values())[0] if isinstance(scene, trimesh.Scene) else scene
    assert len(g.faces) == m.num_faces
    img = np.asarray(g.visual.material.baseColorTexture.convert("RGB"))
    np.testing.assert_array_equal(img, tex)
    # the GLB's corners sit where the mesh's are, with the same UVs
    np.testing.assert_allclose(np.sort(g.vertices[g.faces].reshape(-1, 3), axis=0),
                               np.sort(m.vertices[m.faces].reshape(-1, 3), axis=0), atol=1e-6)


def test_out_of_range_indices_in_files(tmp_path):
    obj = tmp_path / "oor.obj"
    obj.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n")
    with pytest.raises(MeshError, match="oor.obj.*(out of bounds|outside)"):
        load_mesh(obj)
    ply = tmp_path / "oor.ply"
    ply.write_text("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
                   "property float z\nelement face 1\nproperty list uchar int vertex_indices\n"
                   "end_header\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n")
    with pytest.raises(MeshError, match=r"oor.ply: face 0 has vertex index \[0, 1, 7\] outside"):
        load_mesh(ply)
