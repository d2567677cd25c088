"""The scenes model: smoke training (deterministic, resumable), the shipped weights (load,
size, sampling, every task), the gate (prompt agreement and KID on the shipped weights)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from syncsde.models import denoiser_from_pipeline, infer_kind, load_pipeline  # noqa: E402
from syncsde.scenes.model import CLASSIFIER_DIR, PIPELINE_DIR  # noqa: E402
from syncsde.scenes.vocab import UnknownWordError  # noqa: E402


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("scenes")


def test_smoke_training_is_deterministic_and_resumable(tmp_path):
    from safetensors.torch import load_file

    from syncsde.scenes.train import train_diffusion

    kw = dict(steps=4, batch=4, checkpoint_every=100, progress=False, log=lambda s: None)
    a = train_diffusion(tmp_path / "a", **kw)
    b1 = train_diffusion(tmp_path / "b", stop_at=2, **kw)  # interrupted after 2 steps
    assert b1["stopped_at"] == 2 and not (tmp_path / "b" / "pipeline").exists()
    assert json.loads((tmp_path / "b" / "checkpoint.json").read_text())["step"] == 2
    train_diffusion(tmp_path / "b", **kw)  # resumes
    wa = load_file(str(tmp_path / "a" / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert np.isfinite(a["final_loss"])
    # the trained folder loads through the same path as the shipped model
    p = load_pipeline(str(tmp_path / "a" / "pipeline"))
    assert type(p).__name__ == "ScenesPipeline"
    with pytest.raises(ValueError, match="other settings"):
        train_diffusion(tmp_path / "b", **dict(kw, steps=5))


def test_training_on_several_widths_is_resumable_and_checked(tmp_path, capsys):
    """``widths``: each step trains on scenes of one width (the law of a crop of a wider scene);
    the widths are recorded, a resumed run ends with the same weights, and bad widths are
    refused with a message (a one-line error from the CLI)."""
    from safetensors.torch import load_file

    from syncsde.scenes.train import diffusion_batch, main, train_diffusion

    x, prompts = diffusion_batch(0, 0, 3, width=16)
    assert x.shape == (3, 3, 32, 16) and len(prompts) == 3
    # the same scenes at full width: same prompts (the prompt comes from the spec, not the pixels)
    assert diffusion_batch(0, 0, 3)[1] == prompts
    kw = dict(steps=3, batch=2, checkpoint_every=100, progress=False, log=lambda s: None,
              widths=(8, 16))
    a = train_diffusion(tmp_path / "a", **kw)
    assert a["widths"] == [8, 16]
    train_diffusion(tmp_path / "b", stop_at=1, **kw)
    train_diffusion(tmp_path / "b", **kw)
    wa, wb = (load_file(str(tmp_path / n / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors"))
              for n in ("a", "b"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    with pytest.raises(ValueError, match="other settings"):   # widths are part of the settings
        train_diffusion(tmp_path / "b", **dict(kw, widths=(16,)))
    with pytest.raises(ValueError, match="multiples of 8"):
        train_diffusion(tmp_path / "c", **dict(kw, widths=(12,)))
    assert main(["diffusion", "--out", str(tmp_path / "d"), "--steps", "1", "--batch", "2",
                 "--quiet", "--widths", "8,20"]) == 2
    assert "multiples of 8" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="comma-separated integers"):
        main(["diffusion", "--out", str(tmp_path / "e"), "--widths", "8,x"])


def test_smoke_classifier_training(tmp_path):
    from syncsde.scenes.classifier import load_classifier
    from syncsde.scenes.train import train_classifier

    s = train_classifier(tmp_path, steps=3, batch=8, progress=False, log=lambda s: None, heldout=50)
    assert set(s["heldout_accuracy"]) == {"time", "ground", "ridges", "flags"}
    m = load_classifier(tmp_path / "classifier")
    assert m(torch.rand(2, 3, 32, 32)).shape == (2, 15)


def test_training_commands_run_from_the_command_line(tmp_path):
    """The documented CLI (a classifier run and an offset-noise diffusion stage from a pipeline
    folder) ends with loadable folders; the offset noise changes the weights and is recorded."""
    from safetensors.torch import load_file

    from syncsde.scenes.classifier import load_classifier
    from syncsde.scenes.train import main

    assert main(["classifier", "--out", str(tmp_path / "c"), "--steps", "2", "--batch", "4",
                 "--quiet"]) == 0
    load_classifier(tmp_path / "c" / "classifier")
    base = ["diffusion", "--steps", "2", "--batch", "4", "--quiet"]
    assert main(base + ["--out", str(tmp_path / "d0")]) == 0
    for name, extra in (("d1", []), ("d2", ["--offset-noise", "0.1"])):
        assert main(base + ["--out", str(tmp_path / name), "--init",
                            str(tmp_path / "d0" / "pipeline")] + extra) == 0
    w1, w2 = (load_file(str(tmp_path / n / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors"))
              for n in ("d1", "d2"))
    assert any(not torch.equal(w1[k], w2[k]) for k in w1)
    assert json.loads((tmp_path / "d2" / "summary.json").read_text())["offset_noise"] == 0.1
    assert "offset_noise" not in json.loads((tmp_path / "d1" / "summary.json").read_text())


def test_shipped_files_are_safetensors_and_small():
    files = [p for p in PIPELINE_DIR.parent.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 20 * 2**20
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt")]
    assert (PIPELINE_DIR / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (CLASSIFIER_DIR / "model.safetensors").is_file()
    assert infer_kind("scenes") == "scenes" and infer_kind(str(PIPELINE_DIR)) == "scenes"


def test_shipped_model_loads_and_samples(pipe):
    den = denoiser_from_pipeline(pipe)
    assert type(den).__name__ == "PixelDenoiser" and den.sample_size == 32
    x = pipe(["a day over the grass", "a night over the sea"], num_inference_steps=4,
             generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 3, 32, 32) and torch.isfinite(x).all()
    assert 0 <= float(x.min()) and float(x.max()) <= 1 and float(x.std()) > 0.01
    with pytest.raises(UnknownWordError, match="unknown word 'cat'"):
        pipe("a cat")
    with pytest.raises(UnknownWordError, match="knows: a, above"):
        den(torch.zeros(1, 3, 32, 32), 500, ["a dog over the sea"])


def test_every_task_runs_on_the_scenes_model(pipe):
    from syncsde import pipelines as P

    r = P.wide_image(pipe, "a sunset over the sea with mountains", height=32, width=64,
                     num_inference_steps=3, progress=False)
    assert r.tensors.shape == (1, 3, 32, 64) and r.settings["model"] == "scenes"
    assert r.settings["window"] == 32 and r.settings["stride"] == 8
    r = P.ambiguous_image(pipe, "a day over the grass", "a night over the snow", view="rot180",
                          num_inference_steps=3, progress=False)
    assert r.tensors.shape == (3, 3, 32, 32)
    # the prompt-B reading is the 180-degree rotation of the prompt-A reading
    assert torch.allclose(r.tensors[0], torch.flip(r.tensors[1], (-2, -1)))
    m = np.zeros((32, 32))
    m[18:28, 8:24] = 1
    r = P.mask_generation(pipe, m, "a sunset over the sea", "a sunset over the sea with a boat",
                          "a sunset over the sea with a boat", height=32, width=32,
                          num_inference_steps=3, progress=False)
    assert r.tensors.shape == (1, 3, 32, 32)
    from syncsde.scenes.generator import SceneSpec, render

    img = render(SceneSpec("sunset", "grass", 1, ("trees",)), 32, 32, 0).image
    r = P.edit_image(pipe, img, "a sunset over the grass with hills and trees", source_word="grass",
                     target_word="snow", num_inference_steps=3, progress=False)
    assert r.tensors.shape == (1, 3, 32, 32) and r.extras["mask"].shape == (32, 32)
    assert r.settings["target_prompt"] == "a sunset over the snow with hills and trees"
