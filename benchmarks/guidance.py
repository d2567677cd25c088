"""Cost and quality of the gradient-based strategies (SyncDiffusion, SyncVC) beside
MultiDiffusion, SyncSDE and collage.

    python benchmarks/guidance.py cost  --json out/guidance_cost.json     # SD-sized UNet, random weights
    python benchmarks/guidance.py exact --json out/guidance_exact.json --plot docs/guidance_tradeoff.png

``cost``: an SD-1.5-sized UNet (860M parameters, random weights) and SD's VAE decoder at reduced
resolution (latent windows ``--latent`` square, 3 windows at half-window stride), a few DDIM steps
with CFG off; per strategy: model calls (batches) and inputs of the sampler and of the strategy,
backward passes (through the UNet or only through decoder and distance), and seconds per
sample. Only the ratios mean anything (shared CPU).

``exact``: the exact-score wide task (Gaussian field, ``syncsde.benchmark.build_wide``) and the
ambiguous task: W2^2 to the exact law (fidelity), the seam statistic (1 is ideal) and an
intra-canvas coherence, the mean pairwise Gram distance between the 4 non-overlapping 8x8 crops
(the analogue of Intra-Style-L; the oracle's value is the truth, lower than it means lost
variety), against seconds per sample; the plot is coherence vs seconds.
"""
from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import torch

import syncsde  # noqa: F401  (before torch: sets the OpenMP wait policy)
from syncsde.atomic import atomic_write_json
from syncsde.guidance import CallCounter, GramDistance
from syncsde.strategies import make_strategy


# ---- cost on an SD-sized UNet ---------------------------------------------------------------
class _UNetEps:
    """eps = UNet(x, t, fixed random text embedding): differentiable (no no_grad wrapper)."""

    prediction_type = "epsilon"

    def __init__(self, unet, emb):
        self.unet, self.emb = unet, emb

    def __call__(self, x, t, cond):
        e = self.emb.expand(len(x), -1, -1).to(x.dtype)
        return self.unet(x, int(t), encoder_hidden_states=e).sample


def _sd_models(latent: int, seed: int = 0):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=latent, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768, attention_head_dim=8).eval()
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                        down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4,
                        block_out_channels=(128, 256, 512, 512), sample_size=8 * latent).eval()
    for p in itertools.chain(unet.parameters(), vae.parameters()):
        p.requires_grad_(False)  # gradients flow to the inputs only
    emb = torch.randn(1, 8, 768)
    return unet, vae, emb


def cost(args) -> dict:
    from syncsde.sampler import sample
    from syncsde.tasks import wide_problem

    L = args.latent
    unet, vae, emb = _sd_models(L)
    decode = lambda z: vae.decode(z / 0.18215).sample
    prob = wide_problem((4, L, 2 * L), window=(L, L), stride=(1, L // 2), cond="p")
    configs = {
        "multidiffusion": ("multidiffusion", {}),
        "syncsde": ("syncsde", {"inv_lambda": 5.0}),
        "syncdiffusion (paper: UNet grad, refresh, every step)":
            ("syncdiffusion", {"decode": decode, "grad_through": "model", "refresh": True}),
        "syncdiffusion fast (decoder grad only, no refresh)":
            ("syncdiffusion", {"decode": decode, "grad_through": "tweedie", "refresh": False}),
        "syncvc (Tweedie controls, 5 it.)": ("syncvc", {"iterations": 5}),
        "syncvc (UNet controls, 1 it.)": ("syncvc", {"iterations": 1, "grad_through": "model"}),
    }
    res = {}
    for label, (name, opts) in configs.items():
        den = CallCounter(_UNetEps(unet, emb))
        strat = make_strategy(name, **opts)
        t0 = time.perf_counter()
        sample(prob, den, strat, "sd", num_steps=args.steps, seed=0, progress=False)
        sec = time.perf_counter() - t0
        c = getattr(strat, "costs", None)
        extra = c.as_dict() if c is not None else {}
        grad_model = extra.get("grad_model_inputs", 0)
        # the counter sees every model input, the strategy's own (graph and refresh) included
        row = {"model_inputs": den.inputs, "strategy_inputs": extra.get("model_inputs", 0),
               "grad_model_inputs": grad_model,
               "backward": extra.get("backward", 0),
               "unet_backward": extra.get("backward", 0) if grad_model else 0,
               "seconds": sec}
        res[label] = row
        print(f"{label:55s} model inputs {den.inputs:3d} ({row['strategy_inputs']:3d} by the strategy, "
              f"{grad_model:3d} with grad)  backward {row['backward']:3d} "
              f"(UNet {row['unet_backward']:3d})  {sec:7.1f} s", flush=True)
    md = res["multidiffusion"]["seconds"]
    print(f"\nSD-1.5-sized UNet + VAE decoder (random weights), latent windows {L}x{L}, 3 windows, "
          f"{args.steps} DDIM steps, CFG off, 1 sample\n")
    print("| strategy | model inputs (of which by the strategy) | with grad | backward (through the UNet) | s / sample | x MD |")
    print("|---|---|---|---|---|---|")
    for label, r in res.items():
        print(f"| {label} | {r['model_inputs']} ({r['strategy_inputs']}) | {r['grad_model_inputs']} | "
              f"{r['backward']} ({r['unet_backward']}) | {r['seconds']:.1f} | {r['seconds'] / md:.2f} |")
    return res


# ---- quality vs time on the exact-score tasks ------------------------------------------------
def _intra_gram(canvas: torch.Tensor, crop: int) -> float:
    """Mean pairwise Gram distance between non-overlapping ``crop``-wide crops of each canvas."""
    W = canvas.shape[-1]
    crops = [canvas[..., :, k:k + crop] for k in range(0, W - crop + 1, crop)]
    d = GramDistance()
    vals = [d(a.double(), b.double()).mean() for a, b in itertools.combinations(crops, 2)]
    return float(torch.stack(vals).mean())


WIDE_CONFIGS = {
    "multidiffusion": ("multidiffusion", {}),
    "syncsde (1/lambda lin 20, tuned)": ("syncsde", {"inv_lambda": 20.0}),
    "collage": ("collage", {}),
    "syncdiffusion published (w20, .95, every step, UNet grad)": ("syncdiffusion", {}),
    "syncdiffusion first 3 steps": ("syncdiffusion", {"first": 3}),
    "syncdiffusion every 5th step": ("syncdiffusion", {"every": 5}),
    "syncdiffusion Tweedie grad, no refresh": ("syncdiffusion", {"grad_through": "tweedie",
                                                                 "refresh": False}),
    "syncdiffusion w=2": ("syncdiffusion", {"weight": 2.0}),
    "syncdiffusion w=60": ("syncdiffusion", {"weight": 60.0}),
    "syncdiffusion w=200": ("syncdiffusion", {"weight": 200.0}),
    "syncvc published (5 it., lr .05, rho 1, lambda .1, alpha 1)": ("syncvc", {"inv_lambda": 20.0}),
    "syncvc lr .01": ("syncvc", {"inv_lambda": 20.0, "lr": 0.01}),
    "syncvc lambda 1": ("syncvc", {"inv_lambda": 20.0, "kl_weight": 1.0}),
    "syncvc UNet controls": ("syncvc", {"inv_lambda": 20.0, "grad_through": "model"}),
    "syncvc without the SyncSDE coupling (1/lambda 0)": ("syncvc", {"inv_lambda": 0.0}),
}
AMBIGUOUS_CONFIGS = {
    "noise_average": ("noise_average", {}),
    "syncsde (lin 2, tuned)": ("syncsde", {"inv_lambda": 2.0}),
    "syncdiffusion published": ("syncdiffusion", {}),
    "syncdiffusion w=2": ("syncdiffusion", {"weight": 2.0}),
    "syncvc published": ("syncvc", {"inv_lambda": 2.0}),
    "syncvc lr .01": ("syncvc", {"inv_lambda": 2.0, "lr": 0.01}),
    "syncvc lambda 1": ("syncvc", {"inv_lambda": 2.0, "kl_weight": 1.0}),
    "syncvc UNet controls": ("syncvc", {"inv_lambda": 2.0, "grad_through": "model"}),
}


def exact(args) -> dict:
    from syncsde.benchmark import TASKS, _oracle_problem, evaluate
    from syncsde.priors import PriorDenoiser
    from syncsde.sampler import SamplingSchedule, sample

    schedule = SamplingSchedule.preset("sd", args.steps)
    out = {}
    for task_name, configs in (("wide", WIDE_CONFIGS), ("ambiguous", AMBIGUOUS_CONFIGS)):
        task = TASKS[task_name](schedule)
        rows = {}
        for label, (name, opts) in configs.items():
            strat = make_strategy(name, **opts)
            den = CallCounter(task.denoiser)
            t0 = time.perf_counter()
            try:
                r = sample(task.problem, den, strat, schedule, seed=args.seed,
                           batch=args.samples, progress=False)
            except FloatingPointError as e:  # a too-large guidance weight blows the state up
                print(f"{task_name:9s} {label:62s} diverged: {e}", flush=True)
                rows[label] = {"diverged": str(e)}
                continue
            sec = time.perf_counter() - t0
            row = evaluate(task, r.output)
            if task_name == "wide":
                row["intra_gram"] = _intra_gram(r.output, 8)
            row["seconds_per_1k"] = 1000 * sec / args.samples
            c = getattr(strat, "costs", None)
            row["backward"] = 0 if c is None else c.backward
            row["model_inputs_per_sample"] = den.inputs / args.samples  # strategy's included
            rows[label] = row
            print(f"{task_name:9s} {label:62s} W2={row['w2']:7.3f}"
                  + (f" seam={row['seam']:5.2f} intra={row['intra_gram']:.4f}" if "seam" in row else "")
                  + f"  {row['seconds_per_1k']:6.2f} s/1k", flush=True)
        shape = tuple(task.target.event_shape)
        oden = PriorDenoiser({"target": task.target}, schedule.abar)
        r = sample(_oracle_problem(shape), oden, "independent", schedule, seed=args.seed,
                   batch=args.samples, progress=False)
        row = evaluate(task, r.output)
        if task_name == "wide":
            row["intra_gram"] = _intra_gram(r.output, 8)
        rows["oracle"] = row
        out[task_name] = rows
    _print_exact(out, args)
    if args.plot:
        _plot(out["wide"], args.plot)
    return out


def _print_exact(out, args):
    print(f"\nexact-score tasks, {args.samples} samples, {args.steps} DDIM steps (SD schedule)\n")
    w = out["wide"]
    print("| wide: strategy | W2^2 | seam (1 ideal) | intra-Gram (oracle = truth) | model inputs / sample | backward / run | s / 1k samples |")
    print("|---|---|---|---|---|---|---|")
    for k, r in w.items():
        if "diverged" in r:
            print(f"| {k} | diverged (non-finite state) | | | | | |")
            continue
        print(f"| {k} | {r['w2']:.3f} | {r['seam']:.2f} | {r['intra_gram']:.4f} | "
              f"{r.get('model_inputs_per_sample', float('nan')):.0f} | {r.get('backward', '-')} | "
              f"{r.get('seconds_per_1k', float('nan')):.2f} |")
    a = out["ambiguous"]
    print("\n| ambiguous: strategy | W2^2 | s / 1k samples |")
    print("|---|---|---|")
    for k, r in a.items():
        if "diverged" in r:
            print(f"| {k} | diverged | |")
            continue
        print(f"| {k} | {r['w2']:.3f} | {r.get('seconds_per_1k', float('nan')):.2f} |")


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from syncsde.atomic import atomic_savefig

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, lab in ((axes[0], "intra_gram", "intra-canvas Gram distance (coherence)"),
                         (axes[1], "w2", "W2^2 to the exact law (fidelity)")):
        for k, r in rows.items():
            if "diverged" in r:
                continue
            if k == "oracle":
                ax.axhline(r[key], color="grey", ls="--", lw=1)
                continue
            color = "#c44e52" if k.startswith("syncdiffusion") else "#3b75af" \
                if k.startswith("syncvc") else "#333333"
            ax.scatter(r["seconds_per_1k"], r[key], color=color, s=18)
            ax.annotate(k.split(" (")[0], (r["seconds_per_1k"], r[key]),
                        fontsize=6, xytext=(3, 2), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("seconds per 1000 samples (shared 2-core CPU)")
        ax.set_ylabel(lab + " (dashed: oracle)")
    fig.suptitle("exact-score wide task: coherence and fidelity vs time "
                 "(black: baselines, red: SyncDiffusion, blue: SyncVC)", fontsize=9)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cost", help="model calls, backward passes, seconds on an SD-sized UNet")
    c.add_argument("--latent", type=int, default=8, help="latent window side (SD: 64)")
    c.add_argument("--steps", type=int, default=2)
    c.add_argument("--json", default=None)
    e = sub.add_parser("exact", help="quality vs seconds on the exact-score tasks")
    e.add_argument("--samples", type=int, default=1000)
    e.add_argument("--steps", type=int, default=20)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--json", default=None)
    e.add_argument("--plot", default=None)
    args = ap.parse_args(argv)
    res = cost(args) if args.cmd == "cost" else exact(args)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.json, res)
    return res


if __name__ == "__main__":
    main()
