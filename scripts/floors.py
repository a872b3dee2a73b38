"""Print a pip constraints file pinning every runtime dependency to its declared floor.

CI installs the project with it (``.ci/run``): the floors in pyproject.toml are then tested,
not hoped for. A dependency declared without a ``>=`` floor is an error, so none is missed.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def floors(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    pins = []
    for requirement in project["dependencies"]:
        found = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?>=([0-9][0-9.]*)", requirement)
        if found is None:
            raise SystemExit(f"pyproject.toml: {requirement!r} declares no >= floor to test")
        pins.append(f"{found[1]}=={found[2]}")
    return pins


if __name__ == "__main__":
    sys.stdout.write("".join(f"{pin}\n" for pin in floors()))
