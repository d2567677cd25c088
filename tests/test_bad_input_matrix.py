"""The bad-input matrix (tools/bad_input_matrix.py): over 3,000 calls of the raw binding and
the public ops API with one argument broken or re-laid-out each, run in worker subprocesses
that survive crashes. Fails on any crash or wrong answer (a silently accepted bad input, an
answer that differs from NumPy, an unclean exception); prints the counts."""
from __future__ import annotations

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bad_input_matrix_has_no_crash_and_no_wrong_answer():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([p for p in (ROOT, env.get("PYTHONPATH")) if p])
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "bad_input_matrix.py")],
                       capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    summary = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    print(summary)
    m = re.search(r"tried (\d+) / correct answers (\d+) / clean errors (\d+) / wrong answers "
                  r"(\d+) / crashes (\d+)", summary)
    assert m, r.stdout[-3000:] + r.stderr[-3000:]
    tried, ok, clean, wrong, crashes = map(int, m.groups())
    assert tried >= 500 and ok + clean + wrong + crashes == tried
    assert ok >= 100 and clean >= 400  # both halves of the matrix ran
    assert wrong == 0 and crashes == 0 and r.returncode == 0, r.stdout[-6000:]
