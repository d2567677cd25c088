"""``syncsde`` (also ``python -m syncsde``): the demo, the benchmark, and one subcommand per task.

    syncsde demo --out out/          # the newcomer's main job (the built-in scenes model)
    syncsde bench --quick            # the exact-score benchmark table
    syncsde wide|mask|edit|ambiguous|motion ...   # real models (diffusers / MDM weights)
"""
from __future__ import annotations

import argparse
import os
import sys

from syncsde.cli_checks import positive_int


def _demo(args) -> int:
    from syncsde.atomic import check_output_dir
    from syncsde.demo import run_demo

    check_output_dir(args.out)
    run_demo(args.out, steps=args.steps, seed=args.seed, samples=args.samples,
             progress=not args.quiet, benchmark=not args.no_benchmark, prior=args.prior,
             model=args.model)
    return 0


def _bench(args) -> int:
    from pathlib import Path

    from syncsde.atomic import atomic_write_json, check_output_dir
    from syncsde.benchmark import FAST_STRATEGIES, STRATEGIES, TASKS, print_table, run_task
    from syncsde.sampler import SamplingSchedule

    n = args.samples if args.samples is not None else (4000 if args.quick else 20000)
    steps = args.steps if args.steps is not None else (20 if args.quick else 50)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"--tasks: unknown task(s) {unknown or args.tasks!r}; expected some of "
                         f"{', '.join(TASKS)}")
    if args.json:
        check_output_dir(Path(args.json).parent, "--json")
    schedule = SamplingSchedule.preset("sd", steps)
    results = {}
    for name in tasks:
        results[name] = run_task(TASKS[name](schedule), schedule, n, args.seed,
                                 STRATEGIES if args.guidance else FAST_STRATEGIES,
                                 lambda s: print(s, flush=True))
    print()
    print_table(results)
    if args.json:
        atomic_write_json(args.json, results)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from syncsde import __version__

    ap = argparse.ArgumentParser(prog="syncsde", description="Diffusion synchronization (SyncSDE and peers).")
    ap.add_argument("--version", action="version", version=f"syncsde {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="run the demo on the built-in scenes model and write PNGs")
    d.add_argument("--out", default="out", help="output folder (default: out)")
    d.add_argument("--steps", type=positive_int, default=25, help="DDIM steps (default 25)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--samples", type=positive_int, default=1000, help="samples per benchmark cell")
    d.add_argument("--no-benchmark", action="store_true", help="skip the benchmark figure")
    d.add_argument("--prior", action="store_true",
                   help="also the exact-score Gaussian-prior pictures (prior_*.png)")
    d.add_argument("--model", default="scenes",
                   help="the scenes model's name or a folder holding a retrained one")
    d.add_argument("--quiet", action="store_true", help="no progress output")
    d.set_defaults(func=_demo)
    b = sub.add_parser("bench", help="the exact-score benchmark (every task x strategy)")
    b.add_argument("--quick", action="store_true")
    b.add_argument("--samples", type=positive_int, default=None)
    b.add_argument("--steps", type=positive_int, default=None)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--tasks", default="wide,ambiguous,mask,edit,motion")
    b.add_argument("--json", default=None)
    b.add_argument("--guidance", action="store_true",
                   help="also the gradient-based strategies (syncdiffusion, syncvc; slower)")
    b.set_defaults(func=_bench)
    from syncsde.tasks.cli_new import add_new_task_commands

    add_new_task_commands(sub)  # tileable, panorama360, hybrid, bench-new (exact priors)
    from syncsde.tasks.cli_regions import add_region_commands

    add_region_commands(sub)  # regions, upscale
    try:
        from syncsde.cli_models import add_model_commands
    except ImportError:  # the model commands are optional (diffusers extras)
        pass
    else:
        add_model_commands(sub)
        from syncsde.eval.cli import add_eval_command
        from syncsde.mesh.cli import add_texture_command

        add_texture_command(sub)
        add_eval_command(sub)
    return ap


def main(argv=None) -> int:
    """Runs a subcommand. Errors are one line on stderr and a non-zero exit (2 for bad input, 1
    for anything else); Ctrl-C is one line and exit 130. ``SYNCSDE_DEBUG=1`` shows tracebacks."""
    args = build_parser().parse_args(argv)
    debug = os.environ.get("SYNCSDE_DEBUG", "") not in ("", "0")
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"syncsde {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError) as e:  # bad input, missing model or file
        if debug:
            raise
        print(f"syncsde {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - a user-facing tool prints one line, not a traceback
        if debug:
            raise
        print(f"syncsde {args.command}: {type(e).__name__}: {_one_line(e)} (set SYNCSDE_DEBUG=1 "
              "for the traceback)", file=sys.stderr)
        return 1
    if isinstance(result, int):
        return result
    return 0


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 600 else text[:597] + "..."


if __name__ == "__main__":
    sys.exit(main())
