"""Check that a coverage run (`make test-fast`) executed every source module beyond its import: at least one line
inside a function body of each module that has functions (a def line runs at import; its body only when called), and
at least one line of every other module. Prints the modules that fail and exits 1; exit 2 on a missing data file."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import coverage

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("study", "sweeps", "analysis", "reports", "unihetero", "benchmarks")


def body_lines(source: str) -> set[int]:
    """Line numbers of the statements inside function bodies (what runs only when the function is called)."""
    lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for stmt in node.body:
                lines.update(range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1))
    return lines


def unexercised(data: coverage.CoverageData) -> list[str]:
    """The source modules no test executed beyond their import."""
    executed = {Path(f).resolve(): set(data.lines(f) or ()) for f in data.measured_files()}
    missing = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            source = path.read_text()
            if not source.strip():
                continue
            bodies = body_lines(source)
            ran = executed.get(path.resolve(), set())
            if not (ran & bodies if bodies else ran):
                missing.append(str(path.relative_to(ROOT)))
    return missing


def main(argv: list[str]) -> int:
    data_file = Path(argv[0] if argv else ".coverage")
    if not data_file.exists():
        print(f"error: coverage data file '{data_file}' not found (run `make test-fast`)", file=sys.stderr)
        return 2
    data = coverage.CoverageData(basename=str(data_file))
    data.read()
    missing = unexercised(data)
    total = sum(1 for p in PACKAGES for _ in (ROOT / p).rglob("*.py"))
    if missing:
        print(f"{len(missing)} of {total} source modules ran no line beyond their import under test-fast:")
        print("\n".join(f"  {m}" for m in missing))
        return 1
    print(f"every one of {total} source modules ran beyond its import under test-fast")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
