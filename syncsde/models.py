"""Loading the real models behind the sampler (diffusers pipelines) and building denoisers.

- :func:`load_pipeline` loads a diffusers pipeline by hub id or local folder, with the authors'
  choices: DDIM scheduler for Stable Diffusion, no safety checker, no IF watermarker, IF stage II
  without its own text encoder. Known ids (:data:`KNOWN_MODELS`): SD 2 base
  ``stabilityai/stable-diffusion-2-base``, SD 2 (768 px, v-prediction)
  ``stabilityai/stable-diffusion-2``, SD 1.4 ``CompVis/stable-diffusion-v1-4``, SD 1.5, the
  depth ControlNet ``lllyasviel/control_v11f1p_sd15_depth`` (loaded on an SD 1.5 base), DeepFloyd
  IF ``DeepFloyd/IF-I-M-v1.0`` / ``DeepFloyd/IF-II-M-v1.0``.
- :func:`denoiser_from_pipeline` turns any loaded (or hand-built) pipeline into the matching
  denoiser adapter of :mod:`syncsde.denoisers.diffusers_models`.
- When weights are neither cached nor downloadable, :class:`ModelNotAvailableError` says which
  model is missing and how to get it.

Nothing here runs at import time; diffusers is imported on first use.
"""
from __future__ import annotations

import json
import os
import re
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["KNOWN_MODELS", "ModelInfo", "ModelNotAvailableError", "load_pipeline",
           "load_controlnet_pipeline", "load_denoiser", "denoiser_from_pipeline", "infer_kind",
           "KINDS", "DEFAULT_SD15", "DEFAULT_DEPTH_CONTROLNET"]

KINDS = ("sd", "sd-controlnet", "controlnet", "if-stage1", "if-stage2", "scenes", "sdxl", "sd3",
         "flux")
DEFAULT_SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_DEPTH_CONTROLNET = "lllyasviel/control_v11f1p_sd15_depth"


@dataclass(frozen=True)
class ModelInfo:
    kind: str
    description: str
    gated: bool = False
    fp16_variant: bool = False  # the repo has *.fp16.* weight files


KNOWN_MODELS: dict[str, ModelInfo] = {
    "stabilityai/stable-diffusion-2-base": ModelInfo(
        "sd", "Stable Diffusion 2 base (512 px, eps-prediction): wide images, mask generation",
        fp16_variant=True),
    "stabilityai/stable-diffusion-2": ModelInfo(
        "sd", "Stable Diffusion 2 (768 px, v-prediction)", fp16_variant=True),
    "stabilityai/stable-diffusion-2-1-base": ModelInfo("sd", "Stable Diffusion 2.1 base (512 px)",
                                                       fp16_variant=True),
    "CompVis/stable-diffusion-v1-4": ModelInfo(
        "sd", "Stable Diffusion 1.4 (512 px): real-image editing", fp16_variant=True),
    "stable-diffusion-v1-5/stable-diffusion-v1-5": ModelInfo(
        "sd", "Stable Diffusion 1.5 (512 px): base of the depth ControlNet", fp16_variant=True),
    "runwayml/stable-diffusion-v1-5": ModelInfo(
        "sd", "Stable Diffusion 1.5 (the original repo, now removed from the hub; use "
              f"{DEFAULT_SD15})", fp16_variant=True),
    "lllyasviel/control_v11f1p_sd15_depth": ModelInfo(
        "controlnet", "ControlNet 1.1 depth for SD 1.5: mesh texturing views"),
    "DeepFloyd/IF-I-M-v1.0": ModelInfo(
        "if-stage1", "DeepFloyd IF stage I, M (64 px pixel diffusion): ambiguous images",
        gated=True, fp16_variant=True),
    "DeepFloyd/IF-II-M-v1.0": ModelInfo(
        "if-stage2", "DeepFloyd IF stage II, M (64 -> 256 px super-resolution)",
        gated=True, fp16_variant=True),
    "DeepFloyd/IF-I-XL-v1.0": ModelInfo("if-stage1", "DeepFloyd IF stage I, XL", gated=True,
                                        fp16_variant=True),
    "DeepFloyd/IF-II-L-v1.0": ModelInfo("if-stage2", "DeepFloyd IF stage II, L", gated=True,
                                        fp16_variant=True),
    "stabilityai/stable-diffusion-xl-base-1.0": ModelInfo(
        "sdxl", "Stable Diffusion XL base (1024 px, two text encoders): wide images, mask "
                "generation", fp16_variant=True),
    "stabilityai/stable-diffusion-3-medium-diffusers": ModelInfo(
        "sd3", "Stable Diffusion 3 medium (flow matching, 1024 px): wide images, mask generation",
        gated=True),
    "black-forest-labs/FLUX.1-schnell": ModelInfo(
        "flux", "FLUX.1 schnell (flow matching, 4 steps, no guidance): wide images, mask "
                "generation"),
    "black-forest-labs/FLUX.1-dev": ModelInfo(
        "flux", "FLUX.1 dev (flow matching, guidance embedding): wide images, mask generation",
        gated=True),
    "scenes": ModelInfo(
        "scenes", "the built-in scenes model (32 px pixel diffusion with cross-attention, trained "
                  "on syncsde.scenes; ships inside the package, no download)"),
}

_PIPELINE_CLASS_KIND = {
    "StableDiffusionPipeline": "sd",
    "StableDiffusionControlNetPipeline": "sd-controlnet",
    "IFPipeline": "if-stage1",
    "IFSuperResolutionPipeline": "if-stage2",
    "ControlNetModel": "controlnet",
    "ScenesPipeline": "scenes",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusion3Pipeline": "sd3",
    "FluxPipeline": "flux",
}
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelNotAvailableError(OSError):
    """The weights of a model are not available locally and could not be downloaded."""

    def __init__(self, model: str, message: str):
        super().__init__(message)
        self.model = model


def _offline_env() -> bool:
    v = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return v not in ("", "0", "false", "no", "off")


def _hub_cache() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover
        return os.path.expanduser("~/.cache/huggingface/hub")


def _is_local(name: str) -> bool:
    return os.path.isdir(os.path.expanduser(name))


def _looks_like_path(name: str) -> bool:
    return (name.startswith(("/", "./", "../", "~")) or os.sep in name.replace("/", "", 1)
            or not _REPO_ID.match(name))


def infer_kind(model_id_or_path: str) -> str:
    """``sd``, ``sd-controlnet``, ``controlnet``, ``if-stage1`` or ``if-stage2`` from a known id or
    the ``model_index.json`` / ``config.json`` of a local folder."""
    if model_id_or_path in KNOWN_MODELS:
        return KNOWN_MODELS[model_id_or_path].kind
    folder = Path(os.path.expanduser(model_id_or_path))
    for name in ("model_index.json", "config.json"):
        f = folder / name
        if f.is_file():
            cls = json.loads(f.read_text()).get("_class_name", "")
            if cls in _PIPELINE_CLASS_KIND:
                return _PIPELINE_CLASS_KIND[cls]
    low = model_id_or_path.lower()
    if "xl" in low and "stable-diffusion" in low or "sdxl" in low:
        return "sdxl"
    if "stable-diffusion-3" in low or "sd3" in low:
        return "sd3"
    if "flux" in low:
        return "flux"
    if "if-ii" in low:
        return "if-stage2"
    if "deepfloyd" in low or "if-i" in low:
        return "if-stage1"
    if "control" in low:
        return "controlnet"
    return "sd"


def _missing_message(model: str, kind: str, offline: bool, error: BaseException) -> str:
    info = KNOWN_MODELS.get(model)
    what = info.description if info else {"sd": "a Stable Diffusion pipeline",
                                          "sd-controlnet": "an SD + ControlNet pipeline",
                                          "controlnet": "a ControlNet model",
                                          "if-stage1": "a DeepFloyd IF stage I pipeline",
                                          "if-stage2": "a DeepFloyd IF stage II pipeline",
                                          "sdxl": "a Stable Diffusion XL pipeline",
                                          "sd3": "a Stable Diffusion 3 pipeline",
                                          "flux": "a FLUX pipeline"}.get(kind, kind)
    if _looks_like_path(model) and not _REPO_ID.match(model):
        return (f"Cannot load {what} from {model!r}: no such folder (or it is not a diffusers "
                f"folder with model_index.json / config.json). Pass a folder written by "
                f"`save_pretrained` or `hf download <repo> --local-dir <folder>`, "
                f"or a hub id such as {next(iter(KNOWN_MODELS))!r}.\n(original error: {error})")
    gated = (info.gated if info else "deepfloyd" in model.lower())
    why = ("the hub is not reachable here (HF_HUB_OFFLINE / local_files_only is set)" if offline
           else "downloading it failed")
    lines = [f"Cannot load {model!r} ({what}): its weights are not in the local Hugging Face "
             f"cache ({_hub_cache()}) and {why}.", "To get them, on a machine with network access:"]
    step = 1
    if gated:
        lines.append(f"  {step}. accept the license at https://huggingface.co/{model} (DeepFloyd IF is "
                     "gated) and log in: `hf auth login` (or set HF_TOKEN)")
        step += 1
    lines.append(f"  {step}. `hf download {model}` (fills the cache; copy "
                 f"{_hub_cache()} here, or set HF_HOME to where it is)")
    lines.append(f"     or `hf download {model} --local-dir ./{model.split('/')[-1]}` "
                 "and pass that folder instead of the id")
    if kind == "controlnet":
        lines.append(f"  the ControlNet also needs its SD 1.5 base ({DEFAULT_SD15}) the same way")
    lines.append(f"(original error: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})")
    return "\n".join(lines)


def _hub_errors() -> tuple:
    errs: list = [OSError, ConnectionError, TimeoutError]
    try:
        from huggingface_hub import errors as hf_errors

        for name in ("HfHubHTTPError", "OfflineModeIsEnabled", "GatedRepoError",
                     "RepositoryNotFoundError", "LocalEntryNotFoundError"):
            if hasattr(hf_errors, name):
                errs.append(getattr(hf_errors, name))
    except Exception:  # pragma: no cover
        pass
    return tuple(errs)


def _from_pretrained(cls, model: str, kind: str, local_files_only: bool, **kw):
    try:
        return cls.from_pretrained(model, local_files_only=local_files_only, **kw)
    except _hub_errors() as e:
        raise ModelNotAvailableError(model, _missing_message(model, kind, local_files_only or
                                                             _offline_env(), e)) from e
    except ValueError as e:
        if _looks_like_path(model) and not _is_local(model):
            raise ModelNotAvailableError(model, _missing_message(model, kind, True, e)) from e
        raise


def _dtype_kw(dtype) -> dict:
    """diffusers >= 0.40 spells the load dtype ``dtype`` (``torch_dtype`` is deprecated)."""
    try:
        from diffusers.utils import deprecation_utils

        new = hasattr(deprecation_utils, "_resolve_dtype")
    except ImportError:
        new = False
    return {"dtype" if new else "torch_dtype": dtype}


def _default_dtype(device) -> torch.dtype:
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return torch.float16 if dev.type == "cuda" else torch.float32


def _finish(pipe, device, cpu_offload: bool):
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    if cpu_offload:
        dev = torch.device(device) if device is not None else torch.device("cuda")
        if dev.type != "cuda":
            return pipe.to(dev)  # offload only makes sense on an accelerator
        try:
            import accelerate  # noqa: F401
        except ImportError as e:
            raise ImportError("enable_model_cpu_offload needs `accelerate` (pip install accelerate)") from e
        pipe.enable_model_cpu_offload(device=dev)
        return pipe
    if device is not None:
        pipe = pipe.to(device)
    return pipe


def load_pipeline(model_id_or_path: str, kind: str | None = None, torch_dtype: torch.dtype | None = None,
                  device: str | torch.device | None = None, variant: str | None = None,
                  local_files_only: bool | None = None, controlnet: Any = None,
                  base_model: str | None = None, cpu_offload: bool = False,
                  ddim: bool = True, **kwargs):
    """A diffusers pipeline ready for the syncsde tasks.

    - ``kind``: one of :data:`KINDS`; inferred from the id or the folder when omitted.
      ``controlnet`` (a ControlNet id such as ``lllyasviel/control_v11f1p_sd15_depth``) loads
      the ControlNet and an SD 1.5 base (``base_model``, default :data:`DEFAULT_SD15`).
    - ``torch_dtype``: default float16 on CUDA, float32 elsewhere. ``variant``: e.g. ``"fp16"``;
      default ``"fp16"`` for DeepFloyd IF in float16 (as the authors load it), else none.
    - ``local_files_only``: default True when ``HF_HUB_OFFLINE`` is set.
    - ``cpu_offload``: ``enable_model_cpu_offload()`` on CUDA (needs accelerate); otherwise the
      pipeline is moved to ``device``.
    - ``ddim``: replace a Stable Diffusion scheduler by ``DDIMScheduler.from_config`` (the
      authors' choice; the sampler only reads the config either way).
    - ``controlnet=`` a ControlNetModel (or id) with an SD id loads ``sd-controlnet``.

    Safety checker, feature extractor and IF watermarker are not loaded. Raises
    :class:`ModelNotAvailableError` when weights are missing and cannot be downloaded.
    """
    import diffusers

    name = str(model_id_or_path)
    if local_files_only is None:
        local_files_only = _offline_env()
    if kind is None:
        kind = infer_kind(name)
        if controlnet is not None and kind == "sd":
            kind = "sd-controlnet"
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "scenes":  # the built-in model: package weights (or a trained folder)
        from syncsde.scenes.model import PIPELINE_DIR, load_scenes_pipeline

        folder = PIPELINE_DIR if name == "scenes" else Path(os.path.expanduser(name))
        try:
            pipe = load_scenes_pipeline(folder, torch_dtype=torch_dtype)
        except FileNotFoundError as e:
            raise ModelNotAvailableError(name, str(e)) from e
        return _finish(pipe, device, cpu_offload)
    if kind == "controlnet":
        return load_controlnet_pipeline(name, base_model or DEFAULT_SD15, torch_dtype=torch_dtype,
                                        device=device, variant=variant,
                                        local_files_only=local_files_only, cpu_offload=cpu_offload,
                                        **kwargs)
    dtype = torch_dtype or _default_dtype(device)
    kw = dict(_dtype_kw(dtype), **kwargs)
    info = KNOWN_MODELS.get(name)
    if variant is None and dtype == torch.float16 and kind.startswith("if") and \
            (info is None or info.fp16_variant):
        variant = "fp16"
    if variant is not None:
        kw["variant"] = variant
    if kind == "sd":
        kw.setdefault("safety_checker", None)
        kw.setdefault("requires_safety_checker", False)
        pipe = _from_pretrained(diffusers.StableDiffusionPipeline, name, kind, local_files_only, **kw)
    elif kind == "sdxl":
        kw.setdefault("add_watermarker", False)
        pipe = _from_pretrained(diffusers.StableDiffusionXLPipeline, name, kind, local_files_only,
                                **kw)
    elif kind in ("sd3", "flux"):
        cls = diffusers.StableDiffusion3Pipeline if kind == "sd3" else diffusers.FluxPipeline
        pipe = _from_pretrained(cls, name, kind, local_files_only, **kw)
    elif kind == "sd-controlnet":
        if isinstance(controlnet, (str, os.PathLike)):
            controlnet = _from_pretrained(diffusers.ControlNetModel, str(controlnet), "controlnet",
                                          local_files_only, **_dtype_kw(dtype))
        if controlnet is not None:
            kw["controlnet"] = controlnet
        kw.setdefault("safety_checker", None)
        kw.setdefault("requires_safety_checker", False)
        pipe = _from_pretrained(diffusers.StableDiffusionControlNetPipeline, name, kind,
                                local_files_only, **kw)
    elif kind == "if-stage1":
        for k in ("safety_checker", "watermarker", "feature_extractor"):
            kw.setdefault(k, None)
        kw.setdefault("requires_safety_checker", False)
        pipe = _from_pretrained(diffusers.IFPipeline, name, kind, local_files_only, **kw)
    else:  # if-stage2: prompts come from stage I's T5
        for k in ("safety_checker", "watermarker", "feature_extractor", "text_encoder", "tokenizer"):
            kw.setdefault(k, None)
        kw.setdefault("requires_safety_checker", False)
        pipe = _from_pretrained(diffusers.IFSuperResolutionPipeline, name, kind, local_files_only, **kw)
    if ddim and kind in ("sd", "sd-controlnet"):
        pipe.scheduler = diffusers.DDIMScheduler.from_config(pipe.scheduler.config)
    return _finish(pipe, device, cpu_offload)


def load_controlnet_pipeline(controlnet: str = DEFAULT_DEPTH_CONTROLNET,
                             base_model: str = DEFAULT_SD15, torch_dtype=None, device=None,
                             variant: str | None = None, local_files_only: bool | None = None,
                             cpu_offload: bool = False, **kwargs):
    """SD 1.5 + a ControlNet (default: depth, as in the authors' mesh texturing)."""
    import diffusers

    if local_files_only is None:
        local_files_only = _offline_env()
    dtype = torch_dtype or _default_dtype(device)
    shared = {k: kwargs[k] for k in ("cache_dir", "token", "revision") if k in kwargs}
    cn = controlnet if not isinstance(controlnet, (str, os.PathLike)) else _from_pretrained(
        diffusers.ControlNetModel, str(controlnet), "controlnet", local_files_only,
        **_dtype_kw(dtype), **shared)
    return load_pipeline(base_model, kind="sd-controlnet", torch_dtype=dtype, device=device,
                         variant=variant, local_files_only=local_files_only, controlnet=cn,
                         cpu_offload=cpu_offload, **kwargs)


def _execution_device(pipe):
    try:
        return pipe._execution_device
    except Exception:  # pragma: no cover
        return getattr(pipe, "device", torch.device("cpu"))


def denoiser_from_pipeline(pipe, prompts=None, **kw):
    """The denoiser adapter for a loaded pipeline (SD, SD + ControlNet, IF I, IF II).

    ``prompts`` shares a :class:`~syncsde.denoisers.diffusers_models.PromptEncoder` (IF stage II
    has no text encoder: pass stage I's denoiser ``.prompts``). The adapter is cached on the
    pipeline (in a weak map beside it: the pipeline object itself is not modified) so its prompt
    cache survives between calls.
    """
    from syncsde.denoisers import diffusers_models as dm

    cached = _DENOISERS.get(pipe)
    model = getattr(pipe, "unet", None)
    if model is None:
        model = getattr(pipe, "transformer", None)
    if cached is not None and prompts is None and not kw and cached.unet is model \
            and getattr(cached, "controlnet", None) is getattr(pipe, "controlnet", None):
        cached.device = _execution_device(pipe)
        cfg = pipe.scheduler.config
        if cfg is not cached.scheduler_config:  # the scheduler was swapped: follow it
            cached.scheduler_config = cfg
            cached.scheduler_class = type(pipe.scheduler).__name__
            cached.prediction_type = cfg.get("prediction_type", "epsilon")
            cached._abar_table = None
        return cached
    cls = type(pipe).__name__
    tok = getattr(pipe, "tokenizer", None)
    enc = getattr(pipe, "text_encoder", None)
    dev = _execution_device(pipe)
    if cls == "ScenesPipeline":  # pixel space, prompts checked against the scene vocabulary
        from syncsde.scenes.model import ScenesPromptEncoder

        den = dm.PixelDenoiser(pipe.unet, prompts or ScenesPromptEncoder(tok, enc), pipe.scheduler,
                               device=dev, **kw)
        _remember(pipe, den)
        return den
    _refuse_unsupported(pipe, cls)
    if getattr(pipe, "unet", None) is None and getattr(pipe, "transformer", None) is not None:
        from syncsde.denoisers import flow

        family = "sd3" if cls.startswith("StableDiffusion3") else "flux"
        den_cls = flow.SD3Denoiser if family == "sd3" else flow.FluxDenoiser
        if prompts is None:
            prompts = flow.FlowPromptEncoder(pipe, family)
        den = den_cls(pipe.transformer, prompts, pipe.scheduler, getattr(pipe, "vae", None),
                      sample_size=getattr(pipe, "default_sample_size", None), device=dev, **kw)
        _remember(pipe, den)
        return den
    if _is_sdxl(pipe, cls):
        from syncsde.denoisers.sdxl import StableDiffusionXLDenoiser, XLPromptEncoder

        if prompts is None:
            prompts = XLPromptEncoder(
                [tok, getattr(pipe, "tokenizer_2", None)],
                [enc, getattr(pipe, "text_encoder_2", None)],
                force_zeros_for_empty_prompt=_config_get(pipe, "force_zeros_for_empty_prompt", True))
        den = StableDiffusionXLDenoiser(pipe.unet, prompts, pipe.scheduler,
                                        getattr(pipe, "vae", None), device=dev, **kw)
        _remember(pipe, den)
        return den
    if prompts is None and tok is not None and enc is not None:
        prompts = dm.PromptEncoder(tok, enc, style="t5" if cls.startswith("IF") else "clip")
    if cls.startswith("IFSuperResolution"):
        den = dm.IFSuperResolutionDenoiser(pipe.unet, prompts, pipe.scheduler,
                                           getattr(pipe, "image_noising_scheduler", None),
                                           device=dev, **kw)
    elif cls.startswith("IF"):
        den = dm.IFDenoiser(pipe.unet, prompts, pipe.scheduler, device=dev, **kw)
    elif getattr(pipe, "controlnet", None) is not None:
        den = dm.ControlNetDenoiser(pipe.unet, pipe.controlnet, prompts, pipe.scheduler,
                                    getattr(pipe, "vae", None), device=dev, **kw)
    elif getattr(pipe, "unet", None) is not None:
        den = dm.StableDiffusionDenoiser(pipe.unet, prompts, pipe.scheduler,
                                         getattr(pipe, "vae", None), device=dev, **kw)
    else:
        raise TypeError(f"don't know how to build a denoiser from {cls} (supported: Stable "
                        "Diffusion 1.x/2.x, their ControlNet pipelines, DeepFloyd IF I/II, the "
                        "scenes model)")
    _remember(pipe, den)
    return den


# the adapter of each pipeline, kept beside it (the user's pipeline object is not modified)
_DENOISERS: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


def _remember(pipe, den) -> None:
    try:
        _DENOISERS[pipe] = den
    except TypeError:  # an object that cannot be weakly referenced: no cache
        pass


def _config_get(obj, key: str, default=None):
    cfg = getattr(obj, "config", None)
    if cfg is None:
        return default
    try:
        return cfg.get(key, default)
    except AttributeError:
        return getattr(cfg, key, default)


def _is_sdxl(pipe, cls: str) -> bool:
    unet = getattr(pipe, "unet", None)
    return unet is not None and _config_get(unet, "addition_embed_type") == "text_time"


def _refuse_unsupported(pipe, cls: str) -> None:
    """A clear refusal for model families the adapters do not speak (instead of an obscure
    error deep inside the model): SDXL variants other than text-to-image (refiner without the
    first text encoder, SDXL ControlNet / inpainting), and transformer pipelines that are not
    supported."""
    unet = getattr(pipe, "unet", None)
    if _is_sdxl(pipe, cls):
        if getattr(pipe, "text_encoder", None) is None or getattr(pipe, "text_encoder_2", None) is None:
            raise ValueError(f"{cls}: SDXL pipelines need both text encoders (the refiner, with "
                             "only text_encoder_2, is not supported)")
        if getattr(pipe, "controlnet", None) is not None:
            raise ValueError(f"{cls}: SDXL ControlNet pipelines are not supported (SDXL "
                             "text-to-image is)")
        if _config_get(unet, "in_channels", 4) != 4:
            raise ValueError(f"{cls}: SDXL inpainting UNets (in_channels="
                             f"{_config_get(unet, 'in_channels')}) are not supported")
        return
    if unet is None and getattr(pipe, "transformer", None) is not None:
        if cls in ("StableDiffusion3Pipeline", "FluxPipeline"):
            sched = type(getattr(pipe, "scheduler", None)).__name__
            if sched != "FlowMatchEulerDiscreteScheduler":
                raise ValueError(f"{cls} with {sched}: flow-matching models run with "
                                 "FlowMatchEulerDiscreteScheduler only")
            return
        raise ValueError(f"{cls}: this transformer pipeline is not supported (supported: "
                         "StableDiffusion3Pipeline and FluxPipeline text-to-image; not their "
                         "img2img / inpainting / ControlNet variants, nor other DiT / FLUX "
                         "variants such as FLUX Fill, Kontext or PixArt)")


def owning_denoiser(pipe):
    """The adapter of a pipeline that nobody else holds (loaded on the fly): it keeps the
    pipeline alive where it needs it (the SD3 / FLUX prompt encoders call its
    ``encode_prompt``) and is not cached beside it, so both are freed together."""
    den = denoiser_from_pipeline(pipe)
    try:
        _DENOISERS.pop(pipe, None)
    except TypeError:  # pragma: no cover - not weakly referenceable: never cached
        pass
    hold = getattr(getattr(den, "prompts", None), "hold", None)
    if hold is not None:
        hold(pipe)
    return den


def load_denoiser(model_id_or_path: str, **kwargs):
    """The adapter of ``load_pipeline(model_id_or_path, **kwargs)`` (which it keeps alive)."""
    return owning_denoiser(load_pipeline(model_id_or_path, **kwargs))
