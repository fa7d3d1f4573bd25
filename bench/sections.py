"""Sections of bench/results.md written by their own tools (bench.curves, bench.replay), kept in
results.json beside the platform's measurements so `python -m bench` never drops them."""
from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def update(name: str, markdown: str, out: Path = HERE) -> None:
    from bench.__main__ import render
    path = out / "results.json"
    results = json.loads(path.read_text())
    command = "python -m " + Path(sys.argv[0]).parent.name + "." + Path(sys.argv[0]).stem \
        if sys.argv and sys.argv[0].endswith(".py") else "python"
    command = " ".join([command, *map(shlex.quote, sys.argv[1:])])
    results.setdefault("sections_md", {})[name] = {"markdown": markdown, "command": command,
                                                   "date": time.strftime("%Y-%m-%d %H:%M")}
    tmp = path.with_suffix(".tmp")  # a kill mid-write leaves the old files whole
    tmp.write_text(json.dumps(results, indent=2))
    md = out / "results.md.tmp"
    md.write_text(render(results))
    tmp.replace(path)
    md.replace(out / "results.md")
