"""Lines of code of Python files: non-blank, non-comment lines, and the same without docstrings.

    python tools/count_code_lines.py syncsde/tasks/tileable.py ...
"""
import ast
import sys


def counts(path: str) -> tuple[int, int]:
    src = open(path).read()
    doc = set()
    for node in ast.walk(ast.parse(src)):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and body \
                and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                and isinstance(body[0].value.value, str):
            doc.update(range(body[0].lineno, body[0].end_lineno + 1))
    lines = [(i, s.strip()) for i, s in enumerate(src.splitlines(), 1)]
    code = [i for i, s in lines if s and not s.startswith("#")]
    return len(code), sum(1 for i in code if i not in doc)


if __name__ == "__main__":
    print(f"{'file':40s} {'lines':>6s} {'code (no docstrings)':>21s}")
    for p in sys.argv[1:]:
        a, b = counts(p)
        print(f"{p:40s} {a:6d} {b:21d}")
