"""Print pip constraints that pin each floored dependency to its floor (`name==X` for `name>=X` in pyproject.toml),
for `make test-floors`: the tests of the modules that use them run against the oldest versions the project
allows."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

FLOORED = ("ray", "wandb", "mlflow", "tensorboard", "transformers", "lmms-eval", "submitit")


def floors(pyproject: Path) -> dict[str, str]:
    """The '>=' floor of each floored package that pyproject.toml names."""
    project = tomllib.loads(pyproject.read_text())["project"]
    specs = [*project["dependencies"], *(s for extra in project["optional-dependencies"].values() for s in extra)]
    out: dict[str, str] = {}
    for spec in specs:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*>=\s*([0-9][^,;\s]*)\s*(,.*)?", spec)
        if match and match.group(1).lower() in FLOORED:
            out[match.group(1).lower()] = match.group(3)
    return out


def main() -> int:
    found = floors(Path(__file__).parents[1] / "pyproject.toml")
    missing = [name for name in FLOORED if name not in found]
    if missing:
        print(f"pyproject.toml: no '>=' floor for {', '.join(missing)}", file=sys.stderr)
        return 2
    print("\n".join(f"{name}=={version}" for name, version in found.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
