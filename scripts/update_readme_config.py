"""Rewrite the config reference block of README.md from study.config (run by `make readme`)."""

from pathlib import Path

from study.config import config_reference

START, END = "<!-- config-reference:start -->\n", "<!-- config-reference:end -->"

readme = Path(__file__).parents[1] / "README.md"
head, rest = readme.read_text().split(START)
tail = rest.split(END)[1]
readme.write_text(f"{head}{START}{config_reference()}\n{END}{tail}")
