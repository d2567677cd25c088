"""Tiny diffusers / transformers models with random weights, built offline for the tests.

Everything is made from configs; the tokenizers come from files written to a temporary folder
(CLIP: ``vocab.json`` + ``merges.txt``; T5: a ``tokenizers`` WordLevel model wrapped in
``PreTrainedTokenizerFast``). Nothing here touches the network.
"""
from __future__ import annotations

import json
import os
import string
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

# words that become single CLIP tokens (the rest fall back to letters)
CLIP_WORDS = ("a", "cat", "dog", "photo", "of", "on", "the", "grass", "beach", "boat", "big",
              "with", "painting", "horse", "village", "red", "blue", "car", "tree")
T5_WORDS = CLIP_WORDS + ("an", "oil", "snowy", "mountain")


def _bpe_merges(word: str) -> list[tuple[str, str]]:
    """Left-to-right merges that build ``word</w>`` from its letters."""
    merges = []
    cur = word[0]
    rest = list(word[1:])
    if not rest:
        return merges
    for i, ch in enumerate(rest):
        last = i == len(rest) - 1
        right = ch + "</w>" if last else ch
        merges.append((cur, right))
        cur = cur + right
    return merges


def write_clip_tokenizer(folder: str | Path) -> Path:
    """A CLIP BPE vocabulary: special tokens, every letter/digit (plain and word-final), and
    the words of :data:`CLIP_WORDS` as single tokens."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2}
    for ch in string.ascii_lowercase + string.digits + ",.":
        for tok in (ch, ch + "</w>"):
            vocab.setdefault(tok, len(vocab))
    merges: list[tuple[str, str]] = []
    for w in CLIP_WORDS:
        for a, b in _bpe_merges(w):
            if (a, b) not in merges:
                merges.append((a, b))
            vocab.setdefault(a + b, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges)
                                       + "\n")
    return folder


def clip_tokenizer(folder: str | Path, model_max_length: int = 16):
    from transformers import CLIPTokenizer

    folder = write_clip_tokenizer(folder)
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                         model_max_length=model_max_length)


def t5_tokenizer():
    """A whitespace word-level tokenizer with T5's special tokens (pad 0, eos 1, unk 2)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in T5_WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>", model_max_length=77)


def clip_text_encoder(vocab_size: int = 256, hidden: int = 32, seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=hidden,
                         intermediate_size=37, layer_norm_eps=1e-5, num_attention_heads=4,
                         num_hidden_layers=2, vocab_size=vocab_size, max_position_embeddings=16)
    return CLIPTextModel(cfg).eval()


def sd_unet(cross_dim: int = 32, sample_size: int = 16, seed: int = 0, three_levels: bool = False):
    """A small SD-like UNet. ``three_levels`` gives cross-attention at full, 1/2 and 1/4
    resolution (the editing test needs low-resolution cross-attention layers)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    if three_levels:
        return UNet2DConditionModel(
            block_out_channels=(8, 16, 16), layers_per_block=1, sample_size=sample_size,
            in_channels=4, out_channels=4,
            down_block_types=("CrossAttnDownBlock2D",) * 3,
            up_block_types=("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=cross_dim, norm_num_groups=4, attention_head_dim=2).eval()
    return UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=sample_size, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=cross_dim,
        norm_num_groups=4, attention_head_dim=2).eval()


def vae(seed: int = 0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(block_out_channels=[8, 8], in_channels=3, out_channels=3,
                         down_block_types=["DownEncoderBlock2D"] * 2,
                         up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4,
                         norm_num_groups=4, sample_size=32).eval()


def sd_scheduler(prediction_type: str = "epsilon"):
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                         prediction_type=prediction_type)


def sd_pipeline(tmp: str | Path, prediction_type: str = "epsilon", three_levels: bool = False):
    """A tiny ``StableDiffusionPipeline`` (latent 16x16 <- image 32x32, VAE factor 2)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae(), text_encoder=clip_text_encoder(), tokenizer=clip_tokenizer(Path(tmp) / "clip"),
        unet=sd_unet(three_levels=three_levels), scheduler=sd_scheduler(prediction_type),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def controlnet(seed: int = 1):
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    net = ControlNetModel(block_out_channels=(8, 16), layers_per_block=1, in_channels=4,
                          down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                          cross_attention_dim=32, conditioning_embedding_out_channels=(8, 16),
                          norm_num_groups=4, attention_head_dim=2).eval()
    # a fresh ControlNet starts with zero convolutions (no effect): give them random weights
    with torch.no_grad():
        for p in net.parameters():
            if p.abs().max() == 0:
                p.normal_(0.0, 0.1)
    return net


def controlnet_pipeline(tmp: str | Path):
    from diffusers import StableDiffusionControlNetPipeline

    base = sd_pipeline(tmp)
    pipe = StableDiffusionControlNetPipeline(
        vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=base.unet,
        controlnet=controlnet(), scheduler=base.scheduler, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def t5_encoder(d_model: int = 32, seed: int = 0):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=64, d_model=d_model, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                   relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
                   decoder_start_token_id=0)
    return T5EncoderModel(cfg).eval()


def if_unet(super_resolution: bool = False, seed: int = 0):
    """IF-shaped UNet: 3 input channels (6 for super-resolution), 6 output channels."""
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import AttnAddedKVProcessor

    torch.manual_seed(seed)
    extra = {}
    if super_resolution:
        extra = dict(class_embed_type="timestep", mid_block_scale_factor=1.414,
                     time_embedding_act_fn="gelu", time_embedding_dim=32)
    unet = UNet2DConditionModel(
        sample_size=32 if super_resolution else 16, layers_per_block=1, block_out_channels=[16, 32],
        down_block_types=["ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"],
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        up_block_types=["SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"],
        in_channels=6 if super_resolution else 3, out_channels=6, cross_attention_dim=32,
        encoder_hid_dim=32, attention_head_dim=8, addition_embed_type="text",
        addition_embed_type_num_heads=2, cross_attention_norm="group_norm",
        resnet_time_scale_shift="scale_shift", act_fn="gelu", norm_num_groups=8, **extra)
    unet.set_attn_processor(AttnAddedKVProcessor())
    return unet.eval()


def if_scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                         beta_start=0.0001, beta_end=0.02, thresholding=True,
                         dynamic_thresholding_ratio=0.95, sample_max_value=1.0,
                         prediction_type="epsilon", variance_type="learned_range")


def if_pipelines():
    """Tiny IF stage I (16x16) and stage II (16 -> 32) pipelines sharing one T5 encoder."""
    from diffusers import DDPMScheduler, IFPipeline, IFSuperResolutionPipeline

    tok, enc = t5_tokenizer(), t5_encoder()
    stage1 = IFPipeline(tokenizer=tok, text_encoder=enc, unet=if_unet(), scheduler=if_scheduler(),
                        safety_checker=None, feature_extractor=None, watermarker=None,
                        requires_safety_checker=False)
    stage2 = IFSuperResolutionPipeline(
        tokenizer=None, text_encoder=None, unet=if_unet(super_resolution=True, seed=1),
        scheduler=if_scheduler(),
        image_noising_scheduler=DDPMScheduler(num_train_timesteps=1000,
                                              beta_schedule="squaredcos_cap_v2"),
        safety_checker=None, feature_extractor=None, watermarker=None,
        requires_safety_checker=False)
    for p in (stage1, stage2):
        p.set_progress_bar_config(disable=True)
    return stage1, stage2


class TinyMDM(nn.Module):
    """MDM-shaped transformer predicting x0: ``forward(x [B, njoints, 1, L], timesteps [B], y)``.

    ``y`` holds ``mask``, ``lengths``, ``text`` (list of strings) and optionally ``uncond``
    (True = null condition). Text features come from a fixed hash of the words, standing in for
    MDM's frozen CLIP encoder.
    """

    def __init__(self, njoints: int = 263, latent: int = 32, layers: int = 2, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.njoints, self.nfeats = njoints, 1  # MDM's names: x is [B, njoints, nfeats, L]
        self.inp = nn.Linear(njoints, latent)
        self.time = nn.Sequential(nn.Linear(1, latent), nn.SiLU(), nn.Linear(latent, latent))
        self.text = nn.Linear(16, latent)
        layer = nn.TransformerEncoderLayer(latent, 4, 64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers)
        self.out = nn.Linear(latent, njoints)
        self.calls: list[dict] = []

    @staticmethod
    def encode_text(texts):
        feats = torch.zeros(len(texts), 16)
        for i, t in enumerate(texts):
            g = torch.Generator().manual_seed(sum(ord(c) * (k + 1) for k, c in enumerate(t)) % (2**31))
            feats[i] = torch.randn(16, generator=g)
        return feats

    def forward(self, x, timesteps, y):
        B, F, _, L = x.shape
        self.calls.append({"batch": B, "uncond": bool(y.get("uncond", False)), "len": L})
        h = self.inp(x[:, :, 0, :].permute(0, 2, 1))
        t = self.time(timesteps.float().reshape(B, 1) / 1000.0)
        txt = self.encode_text(y["text"]).to(x.dtype)
        if y.get("uncond", False):
            txt = torch.zeros_like(txt)
        tok = (t + self.text(txt)).unsqueeze(1)
        h = self.encoder(torch.cat([tok, h], dim=1))[:, 1:]
        return self.out(h).permute(0, 2, 1).unsqueeze(2)


# ---- SDXL -----------------------------------------------------------------------------------
def clip_text_encoder_with_projection(vocab_size: int = 256, hidden: int = 32,
                                      projection_dim: int = 24, seed: int = 1):
    """CLIP text encoder with the text projection (SDXL's second encoder: pooled embeddings)."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=hidden,
                         intermediate_size=37, layer_norm_eps=1e-5, num_attention_heads=4,
                         num_hidden_layers=3, vocab_size=vocab_size, max_position_embeddings=16,
                         projection_dim=projection_dim, hidden_act="gelu")
    return CLIPTextModelWithProjection(cfg).eval()


def sdxl_unet(cross_dim: int = 64, pooled_dim: int = 24, time_dim: int = 8, sample_size: int = 16,
              seed: int = 0):
    """An SDXL-shaped UNet: ``addition_embed_type="text_time"`` (pooled text embeddings plus the
    six add_time_ids, each embedded in ``time_dim`` features)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=sample_size, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
        use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=time_dim, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * time_dim + pooled_dim,
        cross_attention_dim=cross_dim, norm_num_groups=4).eval()


def sdxl_pipeline(tmp: str | Path, force_zeros_for_empty_prompt: bool = True):
    """A tiny ``StableDiffusionXLPipeline`` (latent 16x16 <- image 32x32): two CLIP encoders
    (32 + 32 hidden features concatenated = the UNet's 64-d cross-attention; the second one's
    24-d projection is the pooled embedding) with the same local tokenizer."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    tok = clip_tokenizer(Path(tmp) / "clip")
    pipe = StableDiffusionXLPipeline(
        vae=vae(), text_encoder=clip_text_encoder(), text_encoder_2=clip_text_encoder_with_projection(),
        tokenizer=tok, tokenizer_2=tok, unet=sdxl_unet(),
        scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012,
                                         beta_schedule="scaled_linear", steps_offset=1,
                                         timestep_spacing="leading"),
        force_zeros_for_empty_prompt=force_zeros_for_empty_prompt, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---- flow matching: SD3 and FLUX ------------------------------------------------------------
def flow_vae(latent_channels: int = 4, seed: int = 0):
    """A tiny VAE with SD3 / FLUX's latent shift and scale (factor 2)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(block_out_channels=[8, 8], in_channels=3, out_channels=3,
                         down_block_types=["DownEncoderBlock2D"] * 2,
                         up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=latent_channels,
                         norm_num_groups=4, sample_size=32, shift_factor=0.0609,
                         scaling_factor=1.5035, use_quant_conv=False,
                         use_post_quant_conv=False).eval()


def sd3_pipeline(tmp: str | Path, shift: float = 3.0):
    """A tiny ``StableDiffusion3Pipeline``: two projected CLIP encoders (32 + 32 = 64-d hidden,
    pooled 24 + 24 = 48), a 64-d T5, an SD3 transformer on 4-channel 16x16 latents."""
    from diffusers import (FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel,
                           StableDiffusion3Pipeline)

    tok = clip_tokenizer(Path(tmp) / "clip")
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(sample_size=16, patch_size=1, in_channels=4, num_layers=2,
                                        attention_head_dim=8, num_attention_heads=4,
                                        caption_projection_dim=32, joint_attention_dim=64,
                                        pooled_projection_dim=48, out_channels=4).eval()
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=shift),
        vae=flow_vae(), text_encoder=clip_text_encoder_with_projection(seed=1),
        tokenizer=tok, text_encoder_2=clip_text_encoder_with_projection(seed=2), tokenizer_2=tok,
        text_encoder_3=t5_encoder(d_model=64, seed=3), tokenizer_3=t5_tokenizer())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def flux_pipeline(tmp: str | Path, guidance_embeds: bool = True):
    """A tiny ``FluxPipeline``: CLIP pooled (32-d) + T5 (32-d) text, a FLUX transformer on
    packed 2x2 patches of a 4-channel latent (16 inputs), optional guidance embedding, and the
    dynamic-shift scheduler of FLUX.1-dev."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1,
                                         num_single_layers=1, attention_head_dim=16,
                                         num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
                                         guidance_embeds=guidance_embeds).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(base_image_seq_len=256, base_shift=0.5,
                                                max_image_seq_len=4096, max_shift=1.15,
                                                shift=3.0, use_dynamic_shifting=True)
    pipe = FluxPipeline(scheduler=scheduler, vae=flow_vae(), text_encoder=clip_text_encoder(seed=1),
                        tokenizer=clip_tokenizer(Path(tmp) / "clip"),
                        text_encoder_2=t5_encoder(d_model=32, seed=2), tokenizer_2=t5_tokenizer(),
                        transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---- few-step models ------------------------------------------------------------------------
def lcm_pipeline(tmp: str | Path):
    """A tiny LCM-distilled SD pipeline: the UNet embeds the guidance scale
    (``time_cond_proj_dim``) and the scheduler is ``LCMScheduler``."""
    from diffusers import LCMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
        norm_num_groups=4, attention_head_dim=2, time_cond_proj_dim=8).eval()
    pipe = StableDiffusionPipeline(
        vae=vae(), text_encoder=clip_text_encoder(), tokenizer=clip_tokenizer(Path(tmp) / "clip"),
        unet=unet, scheduler=LCMScheduler(beta_start=0.00085, beta_end=0.012,
                                          beta_schedule="scaled_linear"),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe
