"""Time and peak memory of ``wide_image`` against the canvas width, with and without tiled VAE
decode (``vae_tiling``; docs/benchmarks.md, section "Scale").

Every run is a fresh child process (``--child``); the parent reads the child's own resource
usage from ``os.wait4`` (``ru_maxrss``: peak resident set, KiB on Linux) and the child reports
the wall time of the ``wide_image`` call. The growth table gives the added peak RSS per added
model width (``d RSS / d width``) between consecutive widths: constant = linear growth.

    python benchmarks/scale.py                      # tiny SD (tests/tiny_models.py), 8..64x
    python benchmarks/scale.py --multiples 8 16 32 64 --steps 3 --max-batch 32 \\
        --json docs/scale_benchmark.json

The tiny SD model (latent 16x16 <- image 32x32, VAE factor 2) stands in for a real one (no
download here). With weights at hand the same script measures the real target, e.g. SD 2-base
at 512x8192 (latent 64x1024, 16x the model width):

    python benchmarks/scale.py --model stabilityai/stable-diffusion-2-base --height 512 \\
        --multiples 4 8 16 --steps 50 --max-batch 8

(``--model`` takes anything ``syncsde.models.load_pipeline`` loads: an id or a folder.)

``--vae-only`` measures the decode alone with Stable Diffusion's VAE architecture (AutoencoderKL,
128-256-512-512 channels, factor 8; random weights built from the config, no download) on a
random latent, whole vs tiled (tile 64 latent pixels, overlap 16): the part of a real 512x8192
run whose memory the tiny model cannot show.

    python benchmarks/scale.py --vae-only --height 256 --multiples 1 2 4 8 \
        --json docs/scale_benchmark_vae.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = {"whole": None, "tiled": "auto"}


def child(args) -> None:
    """One run: build / load the model, run wide_image once, write the result as JSON."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT))
    import torch

    from syncsde.pipelines import wide_image

    torch.set_num_threads(args.threads)
    if args.vae_only:
        return vae_child(args)
    if args.model:
        from syncsde.models import load_pipeline

        pipe = load_pipeline(args.model)
    else:
        import tiny_models as tm

        pipe = tm.sd_pipeline(tempfile.mkdtemp())
    t0 = time.perf_counter()
    out = wide_image(pipe, args.prompt, height=args.height, width=args.width,
                     num_inference_steps=args.steps, progress=False, output_type="pt",
                     max_batch=args.max_batch, circular=args.circular,
                     vae_tiling=MODES[args.mode], seed=0)
    wall = time.perf_counter() - t0
    rec = dict(width=args.width, height=args.height, mode=args.mode, wall_s=wall,
               num_views=out.settings["num_views"], image=list(out.tensors.shape[-2:]))
    Path(args.out).write_text(json.dumps(rec))


class _VAEOnly:
    """The decode of a Stable Diffusion denoiser, for a bare VAE (factor 8, sample size 64)."""

    vae_scale_factor, sample_size = 8, 64

    def __init__(self, vae):
        self.vae = vae

    def decode(self, z):
        from syncsde.denoisers.diffusers_models import decode_latents

        return decode_latents(self.vae, z)


def vae_child(args) -> None:
    import torch
    from diffusers import AutoencoderKL

    from syncsde.denoisers.vae_tiling import decode_canvas

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=[128, 256, 512, 512], layers_per_block=2,
                        down_block_types=["DownEncoderBlock2D"] * 4,
                        up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=4,
                        sample_size=512, scaling_factor=0.18215).eval()
    vae.encoder = None  # only the decoder is measured
    z = torch.randn(1, 4, args.height // 8, args.width // 8,
                    generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    with torch.no_grad():
        img = decode_canvas(_VAEOnly(vae), z, vae_tiling=MODES[args.mode] is not None)
    wall = time.perf_counter() - t0
    rec = dict(width=args.width, height=args.height, mode=args.mode, wall_s=wall, num_views=None,
               image=list(img.shape[-2:]))
    Path(args.out).write_text(json.dumps(rec))


def run_child(argv: list[str]) -> dict:
    """Runs one child; returns its record with ``peak_rss_mib`` from ``os.wait4``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rec.json"
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        proc = subprocess.Popen([sys.executable, __file__, "--child", "--out", str(out), *argv],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0 or not out.exists():
            tail = err.decode(errors="replace")[-2000:]
            return dict(error=f"exit {proc.returncode}: {tail}")
        rec = json.loads(out.read_text())
    rec["peak_rss_mib"] = usage.ru_maxrss / 1024.0  # KiB on Linux
    return rec


def growth(rows: list[dict], native: int) -> list[dict]:
    """Added peak RSS per added model width between consecutive widths, per mode."""
    out = []
    for mode in MODES:
        rs = sorted((r for r in rows if r.get("mode") == mode and "error" not in r),
                    key=lambda r: r["width"])
        for a, b in zip(rs, rs[1:]):
            dw = (b["width"] - a["width"]) / native
            out.append(dict(mode=mode, from_width=a["width"], to_width=b["width"],
                            mib_per_model_width=(b["peak_rss_mib"] - a["peak_rss_mib"]) / dw,
                            s_per_model_width=(b["wall_s"] - a["wall_s"]) / dw))
    return out


def markdown(rows: list[dict], grow: list[dict], native: int) -> str:
    lines = ["| width (px) | x model | windows | mode | wall (s) | peak RSS (MiB) |",
             "|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['width']} | {r['width'] // native} | | {r['mode']} | failed | "
                         f"{r['error'].splitlines()[-1][:60] if r['error'] else ''} |")
            continue
        views = r.get("num_views") or "-"
        lines.append(f"| {r['width']} | {r['width'] // native} | {views} | {r['mode']} "
                     f"| {r['wall_s']:.2f} | {r['peak_rss_mib']:.0f} |")
    lines += ["", "| mode | widths (px) | added peak RSS per model width (MiB) | "
              "added time per model width (s) |", "|---|---|---:|---:|"]
    for g in grow:
        lines.append(f"| {g['mode']} | {g['from_width']} -> {g['to_width']} | "
                     f"{g['mib_per_model_width']:.2f} | {g['s_per_model_width']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="pipeline id / folder (default: tiny SD)")
    p.add_argument("--height", type=int, default=None, help="pixels (default: the model's)")
    p.add_argument("--native", type=int, default=None,
                   help="the model's width in pixels (default: 32 for tiny SD, else --height)")
    p.add_argument("--multiples", type=int, nargs="+", default=[8, 16, 32, 64],
                   help="canvas widths as multiples of the model width")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--max-batch", type=int, default=32,
                   help="model inputs per UNet call (bounds the sampler's memory)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--circular", action="store_true")
    p.add_argument("--vae-only", action="store_true",
                   help="decode only, SD's VAE architecture with random weights")
    p.add_argument("--prompt", default="a photo of a village on the beach")
    p.add_argument("--json", default=None, help="write rows + growth here (atomically)")
    # child-only
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--width", type=int, help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=list(MODES), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    native = args.native or (args.height or 512 if args.model or args.vae_only else 32)
    args.height = args.height or native
    if args.child:
        child(args)
        return
    from tqdm.auto import tqdm

    rows = []
    jobs = [(m, mode) for m in args.multiples for mode in args.modes]
    for m, mode in tqdm(jobs, desc="scale", leave=False):
        argv_c = ["--height", str(args.height), "--width", str(m * native), "--mode", mode,
                  "--steps", str(args.steps), "--max-batch", str(args.max_batch),
                  "--threads", str(args.threads), "--prompt", args.prompt]
        if args.model:
            argv_c += ["--model", args.model]
        if args.circular:
            argv_c.append("--circular")
        if args.vae_only:
            argv_c.append("--vae-only")
        rec = run_child(argv_c)
        rec.setdefault("width", m * native)
        rec.setdefault("mode", mode)
        rows.append(rec)
    grow = growth(rows, native)
    print(markdown(rows, grow, native))
    if args.json:
        model = "SD VAE architecture, random weights (decode only)" if args.vae_only else \
            args.model or "tiny SD (tests/tiny_models.py)"
        meta = dict(model=model, height=args.height,
                    native_width=native, steps=args.steps, max_batch=args.max_batch,
                    threads=args.threads, circular=args.circular,
                    command="python benchmarks/scale.py " + " ".join(argv or sys.argv[1:]))
        dest = Path(args.json)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(dict(meta=meta, rows=rows, growth=grow), fh, indent=1)
        os.replace(tmp, dest)


if __name__ == "__main__":
    main()
