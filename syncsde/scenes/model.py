"""The scenes diffusion model: a pixel-space ``UNet2DConditionModel`` with cross-attention on a
tiny ``CLIPTextModel`` over the scene vocabulary, and its diffusers pipeline.

:class:`ScenesPipeline` is a ``DiffusionPipeline`` (``unet``, ``text_encoder``, ``tokenizer``,
``scheduler``) saved with ``save_pretrained`` (safetensors) under
``syncsde/scenes/weights/pipeline``; :func:`syncsde.models.load_pipeline` loads it for the id
``"scenes"`` and :func:`syncsde.models.denoiser_from_pipeline` turns it into a
:class:`~syncsde.denoisers.diffusers_models.PixelDenoiser` (pixels in [-1, 1], identity
"VAE"), so every task of :mod:`syncsde.pipelines` runs on it.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

__all__ = ["WEIGHTS_DIR", "PIPELINE_DIR", "CLASSIFIER_DIR", "UNET_CONFIG", "TEXT_CONFIG",
           "SCHEDULER_CONFIG", "build_unet", "build_text_encoder", "build_tokenizer",
           "build_scheduler", "build_pipeline", "ScenesPipeline", "load_scenes_pipeline",
           "DEFAULTS", "ScenesPromptEncoder"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
PIPELINE_DIR = WEIGHTS_DIR / "pipeline"
CLASSIFIER_DIR = WEIGHTS_DIR / "classifier"

# sampling defaults that follow the model (native size, windows, CFG)
DEFAULTS = {"height": 32, "width": 32, "wide_width": 256, "window": 32, "stride": 8,
            "num_inference_steps": 25, "guidance_scale": 3.0}

TEXT_CONFIG = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=2, projection_dim=64, hidden_act="quick_gelu")

UNET_CONFIG = dict(
    sample_size=32, in_channels=3, out_channels=3, layers_per_block=1,
    block_out_channels=(16, 32, 64, 96),
    down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    cross_attention_dim=64, attention_head_dim=8, norm_num_groups=8,
    # a pooled prompt embedding added to the time embedding (global conditioning of every
    # ResNet block: time of day, ground, ridges), besides the cross-attention
    addition_embed_type="text", addition_embed_type_num_heads=4)

# IF-style cosine schedule (squaredcos_cap_v2), epsilon prediction, DDIM at sampling time
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                        prediction_type="epsilon", clip_sample=False,
                        set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading")


def build_tokenizer(folder: str | Path):
    from syncsde.scenes.vocab import make_tokenizer

    return make_tokenizer(folder)


def build_text_encoder(tokenizer, seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel

    from syncsde.scenes.vocab import MAX_TOKENS

    torch.manual_seed(seed)
    vocab = tokenizer.get_vocab()
    cfg = CLIPTextConfig(vocab_size=len(vocab), max_position_embeddings=MAX_TOKENS,
                         bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                         pad_token_id=vocab["<|endoftext|>"], **TEXT_CONFIG)
    return CLIPTextModel(cfg)


def build_unet(seed: int = 0, init: str | Path | None = None, pooled_prompt: bool = True):
    """A fresh UNet; with ``init`` (a pipeline folder) its weights start from that model's UNet
    (a model without the pooled-prompt path gets it added with a zero output gain, so it starts
    as the old model)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    cfg = dict(UNET_CONFIG)
    if not pooled_prompt:  # cross-attention only (stage 1 of the shipped model)
        cfg.pop("addition_embed_type")
        cfg.pop("addition_embed_type_num_heads")
    unet = UNet2DConditionModel(**cfg)
    if init is not None:
        from safetensors.torch import load_file

        sd = load_file(str(Path(init) / "unet" / "diffusion_pytorch_model.safetensors"))
        missing, unexpected = unet.load_state_dict(sd, strict=False)
        if unexpected or any(not k.startswith("add_embedding.") for k in missing):
            raise ValueError(f"{str(init)!r}: UNet weights do not fit the scenes config "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        if missing:
            with torch.no_grad():
                unet.add_embedding.norm2.weight.zero_()
                unet.add_embedding.norm2.bias.zero_()
    return unet


def build_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SCHEDULER_CONFIG)


def _pipeline_base():
    from diffusers import DiffusionPipeline

    return DiffusionPipeline


class ScenesPipeline(_pipeline_base()):
    """Text-to-image on the scenes model (plain DDIM with classifier-free guidance).

    ``pipe(prompt, num_inference_steps=25, guidance_scale=3.0, generator=..., height=32,
    width=32)`` returns images ``[B, 3, H, W]`` in [0, 1]. The prompt is checked against the
    scene vocabulary first (unknown words raise with the list of known words).
    """

    model_cpu_offload_seq = "text_encoder->unet"

    def __init__(self, unet, text_encoder, tokenizer, scheduler):
        super().__init__()
        self.register_modules(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer,
                              scheduler=scheduler)

    @torch.no_grad()
    def encode_prompt(self, prompts) -> torch.Tensor:
        tok = self.tokenizer(list(prompts), padding="max_length",
                             max_length=self.tokenizer.model_max_length, truncation=True,
                             return_tensors="pt")
        return self.text_encoder(tok.input_ids.to(self.device))[0]

    @torch.no_grad()
    def __call__(self, prompt, num_inference_steps: int = DEFAULTS["num_inference_steps"],
                 guidance_scale: float = DEFAULTS["guidance_scale"], generator=None,
                 height: int = 32, width: int = 32, num_images_per_prompt: int = 1):
        from syncsde.scenes.vocab import parse_prompt

        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        for p in prompts:
            parse_prompt(p)
        prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        B = len(prompts)
        emb = self.encode_prompt(prompts + [""] * B)
        x = torch.randn((B, 3, height, width), generator=generator, dtype=torch.float32).to(self.device)
        self.scheduler.set_timesteps(num_inference_steps)
        for t in self.progress_bar(self.scheduler.timesteps):
            out = self.unet(torch.cat([x, x]), t, encoder_hidden_states=emb).sample
            cond, unc = out.chunk(2)
            eps = unc + guidance_scale * (cond - unc)
            x = self.scheduler.step(eps, t, x).prev_sample
        return (x / 2 + 0.5).clamp(0, 1).cpu()


def build_pipeline(tokenizer_folder: str | Path, seed: int = 0,
                   init: str | Path | None = None, pooled_prompt: bool = True) -> ScenesPipeline:
    """An untrained pipeline (fresh weights) with the shipped configs, or one whose weights
    start from the pipeline folder ``init``."""
    tok = build_tokenizer(tokenizer_folder)
    enc = build_text_encoder(tok, seed + 1)
    if init is not None:
        from safetensors.torch import load_file

        enc.load_state_dict(load_file(str(Path(init) / "text_encoder" / "model.safetensors")))
    return ScenesPipeline(build_unet(seed, init, pooled_prompt), enc, tok, build_scheduler())


def load_scenes_pipeline(folder: str | Path | None = None, device=None,
                         torch_dtype: torch.dtype | None = None) -> ScenesPipeline:
    """The shipped (or a trained) scenes pipeline from a ``save_pretrained`` folder."""
    folder = Path(folder) if folder is not None else PIPELINE_DIR
    if not (folder / "model_index.json").is_file():
        raise FileNotFoundError(
            f"no scenes model in {str(folder)!r} (model_index.json missing); train one with "
            "`python -m syncsde.scenes.train diffusion --out <folder>`")
    cls = json.loads((folder / "model_index.json").read_text()).get("_class_name")
    if cls != "ScenesPipeline":
        raise ValueError(f"{str(folder)!r} holds a {cls}, not a ScenesPipeline")
    kw = {} if torch_dtype is None else {"torch_dtype": torch_dtype}
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    bars = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    try:
        pipe = ScenesPipeline.from_pretrained(str(folder), local_files_only=True, **kw)
    finally:
        if bars[0]:
            dlog.enable_progress_bar()
        if bars[1]:
            tlog.enable_progress_bar()
    if folder.resolve() == PIPELINE_DIR.resolve():  # settings name the shipped model "scenes"
        pipe.unet.register_to_config(_name_or_path="scenes")
    pipe.set_progress_bar_config(disable=True)
    if device is not None:
        pipe = pipe.to(device)
    return pipe


def _prompt_encoder_base():
    from syncsde.denoisers.diffusers_models import PromptEncoder

    return PromptEncoder


class ScenesPromptEncoder(_prompt_encoder_base()):
    """:class:`~syncsde.denoisers.diffusers_models.PromptEncoder` that first checks every
    prompt string against the scene vocabulary (unknown word -> an error listing the words)."""

    def __call__(self, prompts, device=None, dtype=None):
        from syncsde.scenes.vocab import parse_prompt

        for p in prompts:
            if isinstance(p, str) and p.strip():
                parse_prompt(p)
        return super().__call__(prompts, device=device, dtype=dtype)
