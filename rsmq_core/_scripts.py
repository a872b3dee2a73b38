"""The Lua scripts, read once from the package's ``scripts/`` folder."""

from __future__ import annotations

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


@cache
def source(name: str) -> str:
    """A script's text with the shared helpers in front of it."""
    folder = resources.files(__package__).joinpath("scripts")
    lib = folder.joinpath("_lib.lua").read_text("utf-8")
    return lib + "\n" + folder.joinpath(f"{name}.lua").read_text("utf-8")
