"""The Lua scripts, read once from the package's ``scripts/`` folder."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

NAMES = (
    "create_queue",
    "delete_queue",
    "get_attributes",
    "set_attributes",
    "send",
    "receive",
    "delete",
    "change_visibility",
    "next_visible",
    "move",
    "move_out",
    "move_in",
    "index",
    "notify",
    "purge",
    "sweep",
    "peek",
    "pause",
    "make_visible",
    "schedule",
    "expire",
)


# A helper of _lib.lua: from "local function" to the "end" that closes it, at the line's start.
_HELPER = re.compile(r"^local function (\w+)\(.*?^end\n", re.M | re.S)
_COMMENT = re.compile(r"--[^\n]*")


def _read(file: str) -> str:
    return resources.files(__package__).joinpath("scripts", file).read_text("utf-8")


@cache
def _lib() -> tuple[str, dict[str, str]]:
    """_lib.lua as its constants, and its helpers by name in their order."""
    text = _read("_lib.lua")
    return _HELPER.sub("", text), {m[1]: m[0] for m in _HELPER.finditer(text)}


@cache
def source(name: str) -> str:
    """A script's text with the shared constants and the helpers it calls in front of it.

    Only those it calls: Redis runs a script's whole text at each call, so every helper in
    front of it is made anew each time, and all fifteen cost a send call about 1.5 us of its
    13 in Redis (more than the retry marker: docs/benchmarks.md)."""
    constants, helpers = _lib()
    body = _read(f"{name}.lua")
    used: set[str] = set()
    calling = _COMMENT.sub("", body)
    while more := {h for h in helpers if h not in used and re.search(rf"\b{h}\b", calling)}:
        used |= more  # and what those call in turn
        calling = "".join(_COMMENT.sub("", helpers[h]) for h in more)
    # In _lib.lua's order, where a helper comes after those it calls.
    return "\n".join([constants, *(helpers[h] for h in helpers if h in used), body])
