"""Parity of syncsde's one-call functions with diffusers' own pipelines, per model family and
scheduler, on tiny random models built from configs (tests/tiny_models.py; no download).

With one window covering the canvas and the ``independent`` strategy, ``wide_image`` is plain
sampling; the table prints ``max |ours - diffusers| / max(1, max |diffusers|)`` of the final
latents (4 steps, same generator, CPU, float32). The tests assert 1e-4 for each row
(tests/test_solvers.py, test_conventions.py, test_sdxl.py, test_flow_matching.py).

    python benchmarks/model_parity.py
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import diffusers  # noqa: E402
import torch  # noqa: E402

import tiny_models as tm  # noqa: E402
from syncsde import pipelines as P  # noqa: E402
from syncsde.denoisers.flow import FluxDenoiser  # noqa: E402

BETAS = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
             beta_end=0.012)
SCHEDULERS = {
    "DDIM": tm.sd_scheduler,
    "DDPM": lambda: diffusers.DDPMScheduler(**BETAS),
    "Euler": lambda: diffusers.EulerDiscreteScheduler(**BETAS),
    "Euler-a": lambda: diffusers.EulerAncestralDiscreteScheduler(**BETAS),
    "DPM++2M": lambda: diffusers.DPMSolverMultistepScheduler(**BETAS),
    "LCM": lambda: diffusers.LCMScheduler(**BETAS),
}


def parity(pipe, prompt, unpack: bool = False, steps: int = 4, **kw) -> tuple[str, float]:
    def gen():
        return torch.Generator().manual_seed(3)

    ours = P.wide_image(pipe, prompt, height=32, width=32, window=32, strategy="independent",
                        num_inference_steps=steps, progress=False, output_type="latent",
                        generator=gen(), **kw)
    ref = pipe(prompt, height=32, width=32, num_inference_steps=steps, output_type="latent",
               generator=gen(), **kw).images
    if unpack:
        ref = FluxDenoiser.unpack(ref, 16, 16)
    err = float((ours.images - ref).abs().max()) / max(1.0, float(ref.abs().max()))
    return ours.settings["scheduler"], err


def main() -> None:
    tmp = tempfile.mkdtemp()
    rows = []
    sd = tm.sd_pipeline(Path(tmp) / "sd")
    xl = tm.sdxl_pipeline(Path(tmp) / "xl")
    for family, pipe, kw in (("SD, 2 prompts x 2 images", sd,
                              dict(num_images_per_prompt=2, guidance_scale=7.5)),
                             ("SDXL", xl, dict(guidance_scale=5.0))):
        prompt = ["a photo of a cat", "a dog on the grass"] if pipe is sd else "a photo of a cat"
        for name, make in SCHEDULERS.items():
            pipe.scheduler = make()
            g = 1.0 if name == "LCM" else kw["guidance_scale"]  # LCM-LoRA style: no CFG
            rows.append((family, *parity(pipe, prompt, **{**kw, "guidance_scale": g})))
    rows.append(("SD3 (CFG 7)", *parity(tm.sd3_pipeline(Path(tmp) / "sd3"), "a photo of a cat",
                                        guidance_scale=7.0)))
    fx = tm.flux_pipeline(Path(tmp) / "fx")
    rows.append(("FLUX (guidance embedding 3.5)",
                 *parity(fx, "a photo of a cat", unpack=True, guidance_scale=3.5)))
    rows.append(("FLUX (true CFG 3, negative prompt)",
                 *parity(fx, "a photo of a cat", unpack=True, guidance_scale=3.5,
                         negative_prompt="a red car", true_cfg_scale=3.0)))
    print("| model | scheduler | max abs difference / max(1, max abs) |")
    print("|---|---|---|")
    for family, sched, err in rows:
        print(f"| {family} | {sched} | {err:.1e} |")


if __name__ == "__main__":
    main()
