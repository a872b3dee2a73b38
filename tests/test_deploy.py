"""The Heroku files and the README's settings table, against what the code reads."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from collections.abc import Iterator
from typing import Any

import pytest

import web.settings
import worker.settings
from support.web import ROOT

# Set by Heroku itself (the add-on, the router) or only worth changing off Heroku.
SET_BY_HEROKU = {"REDIS_URL", "PORT", "HOST"}
# Read by uvicorn, not by our settings modules.
UVICORN = {"WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS"}


class Recording(dict[str, str]):
    """An empty environment that remembers every name asked of it."""

    def __init__(self, **given: str) -> None:
        super().__init__(given)
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return super().__contains__(key)

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("settings must ask for names, not list the environment")


def read_by(module: Any) -> set[str]:
    # What no process starts without (HANDLER; API_TOKEN on the default HOST), given.
    env = Recording(HANDLER="worker.example:handle", API_TOKEN="a-secret-of-16-chars")
    module.Settings.from_env(env)
    return env.asked


SETTINGS = read_by(worker.settings) | read_by(web.settings)


def test_both_processes_read_the_connection_settings():
    both = read_by(worker.settings) & read_by(web.settings)
    assert {
        "REDIS_URL",
        "REDIS_TLS_VERIFY",
        "REDIS_TLS_CA_FILE",
        "REDIS_TLS_CERT_FILE",
        "REDIS_TLS_KEY_FILE",
        "RSMQ_NS",
        "LOG_LEVEL",
    } <= both


def readme_settings() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("### Settings") :].split("\n## ")[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([A-Z_]+)`", row.split(" | ")[0])}


def test_the_readme_table_has_every_setting_and_no_other():
    assert readme_settings() == SETTINGS | UVICORN


def test_app_json_describes_every_setting_and_asks_for_the_redis_add_on():
    app = json.loads((ROOT / "app.json").read_text())
    assert set(app["env"]) == SETTINGS - SET_BY_HEROKU | {"FORWARDED_ALLOW_IPS"}
    for name, spec in app["env"].items():
        assert spec["description"].strip(), name
    assert app["env"]["REDIS_TLS_VERIFY"]["value"] == "none"  # Heroku Redis is self-signed
    assert app["env"]["API_TOKEN"]["generator"] == "secret"  # a public app's API is closed
    assert set(app["formation"]) == {"web", "worker"}
    assert [a["plan"].partition(":")[0] for a in app["addons"]] == ["heroku-redis"]


@pytest.mark.parametrize("module", [worker.settings, web.settings])
def test_app_json_values_are_accepted(module):
    app = json.loads((ROOT / "app.json").read_text())
    env = {name: spec["value"] for name, spec in app["env"].items() if "value" in spec}
    env["REDIS_URL"] = "rediss://:secret@ec2.example:6380"
    env["API_TOKEN"] = "generated-by-heroku-0123"  # by Heroku's "generator": "secret"
    assert module.Settings.from_env(env).connection.tls_verify == "none"


def test_python_version_and_requirements_for_the_buildpack():
    version = (ROOT / ".python-version").read_text().strip()
    assert re.fullmatch(r"3\.\d+", version)  # major form: Heroku keeps the patch level current
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == f">={version}"
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    assert [line for line in lines if line and not line.startswith("#")] == ["."]


def test_no_file_holds_a_merge_conflict_left_unresolved():
    # It happened once, in the README's API table, and only a newcomer's read caught it.
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    marker = re.compile(r"^(<{7} |>{7} |={7}$)", re.M)
    left = [
        name
        for name in tracked
        if (ROOT / name).is_file()
        and marker.search((ROOT / name).read_text(encoding="utf-8", errors="replace"))
    ]
    assert left == []
