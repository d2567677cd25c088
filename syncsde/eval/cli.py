"""``syncsde eval CONFIG [--out DIR] [--force | --new] [--no-progress]``.

The lead registers it with ``add_eval_command(subparsers)``; ``python -m syncsde.eval`` runs
it standalone, and ``accelerate launch -m syncsde eval CONFIG`` (or
``accelerate launch -m syncsde.eval CONFIG``) shards it over processes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_eval_command", "run_eval_command", "main"]


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="TOML evaluation config (see docs/evaluation.md)")
    p.add_argument("--out", default=None,
                   help="output folder (default: eval_runs/<config name>)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--force", action="store_true",
                   help="the folder holds another config's results: keep the images whose items "
                        "did not change and make the rest")
    g.add_argument("--new", action="store_true",
                   help="delete the folder's previous images, manifest and results and start over")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_eval_command(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval", help="generate, score and tabulate an evaluation config "
                                           "(resumable; shards under accelerate launch)")
    _add_arguments(p)
    p.set_defaults(func=run_eval_command)
    return p


def run_eval_command(args: argparse.Namespace) -> int:
    from syncsde.eval.config import EvalConfigError
    from syncsde.eval.runner import run_eval

    out = args.out or str(Path("eval_runs") / Path(args.config).stem)
    try:
        results = run_eval(args.config, out, force=args.force, new=args.new,
                           progress=not args.no_progress)
    except (EvalConfigError, FileNotFoundError, ValueError) as e:
        print(f"syncsde eval: error: {e}", file=sys.stderr)
        return 2
    for name in results:
        md = Path(out) / "results" / f"{name}.md"
        print(md.read_text(encoding="utf-8"))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="syncsde eval")
    _add_arguments(ap)
    return run_eval_command(ap.parse_args(argv))
