"""How the project's commands start: --help and --version, refused settings, safe defaults.

`python -m worker`, `python -m web`, `rsmq` and `scripts/run` as a newcomer runs them, each in
a process of its own against a Redis of the test run's.
"""

from __future__ import annotations

import http.server
import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import web.settings
import worker.settings
from rsmq_core import RSMQ
from rsmq_core.embedded import EmbeddedRedis, free_port
from support.workers import wait_for

ROOT = Path(__file__).resolve().parent.parent
RSMQ_BIN = str(Path(sys.executable).with_name("rsmq"))
COMMANDS = {
    "worker": [sys.executable, "-m", "worker"],
    "web": [sys.executable, "-m", "web"],
    "rsmq": [RSMQ_BIN],
}


def run(command: str, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """One of COMMANDS with only the environment given (and PATH), from the repository."""
    env |= {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [*COMMANDS[command], *argv],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


@pytest.fixture
def queued(redis_url, ns):
    """A queue "jobs" with one message waiting; yields a function saying it was never received."""
    with RSMQ.from_url(redis_url, ns=ns) as q:
        q.create_queue("jobs")
        q.send_message("jobs", "real work")

        def untouched() -> bool:
            attributes = q.get_queue_attributes("jobs")
            return (attributes.msgs, attributes.totalrecv) == (1, 0)

        yield untouched


# --help and --version ------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_help_prints_the_settings_and_touches_no_redis(command, redis_url, ns, queued):
    # Found by a newcomer: `python -m worker --help` started a worker that consumed a message.
    env = {
        "REDIS_URL": redis_url,
        "RSMQ_NS": ns,
        "HANDLER": "tests.handlers:record",
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
    }
    result = run(command, "--help", **env)
    assert (result.returncode, result.stderr) == (0, ""), result
    assert result.stdout.startswith("usage: ")
    assert "REDIS_URL" in result.stdout
    assert queued()


@pytest.mark.parametrize(
    ("command", "module"), [("worker", worker.settings), ("web", web.settings)]
)
def test_help_names_every_setting_the_process_reads(command, module):
    from tests.test_deploy import read_by

    out = run(command, "--help").stdout
    assert {name for name in read_by(module) if name not in out} == set()


@pytest.mark.parametrize("command", COMMANDS)
def test_version_prints_the_package_version(command):
    result = run(command, "--version", REDIS_URL="redis://127.0.0.1:1/0")
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        importlib.metadata.version("rsmq-realtime") + "\n",
        "",
    )


@pytest.mark.parametrize("command", ["worker", "web"])
def test_an_unknown_argument_is_refused(command):
    result = run(command, "--handler=x", REDIS_URL="redis://127.0.0.1:1/0")
    assert result.returncode == 2
    assert "unrecognized arguments: --handler=x" in result.stderr


# The worker's HANDLER ------------------------------------------------------------------------


def test_the_worker_without_handler_refuses_to_start_and_consumes_nothing(redis_url, ns, queued):
    result = run("worker", REDIS_URL=redis_url, RSMQ_NS=ns)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "worker: bad setting: HANDLER is not set: set HANDLER=module:function, the function "
        "each message is given to (HANDLER=worker.example:handle runs the example app's)\n"
    )
    assert queued()


def test_every_launcher_names_the_example_handler():
    procfile = (ROOT / "Procfile").read_text()
    assert "HANDLER=${HANDLER:-worker.example:handle} python -m worker" in procfile
    app = json.loads((ROOT / "app.json").read_text())
    assert app["env"]["HANDLER"]["value"] == "worker.example:handle"
    assert '"HANDLER": EXAMPLE_HANDLER' in (ROOT / "scripts" / "launch.py").read_text()
    assert worker.settings.EXAMPLE_HANDLER == "worker.example:handle"


# Bad settings: one line naming the setting -----------------------------------------------------

URL_CASES = [
    (
        "localhost:6399",
        "'localhost:6399' has no scheme: begin it with redis:// (rediss:// "
        "for TLS, unix:// for a socket)",
    ),
    (
        "user:pw@h:1",
        "'user:***@h:1' has no scheme: begin it with redis:// (rediss:// for TLS, "
        "unix:// for a socket)",
    ),
    (
        "http://h:1/0",
        "'http://h:1/0' has the scheme 'http': use redis://, rediss:// (TLS), "
        "redis+sentinel:// or unix://",
    ),
    (
        "redis://:pw@h:99999/0",
        "'redis://:***@h:99999/0' has a port that is not a number from 1 to 65535",
    ),
    (
        "redis://h:1/jobs",
        "'redis://h:1/jobs' has the database 'jobs': give a number (redis://host:6379/0)",
    ),
    ("redis://:6379/0", "'redis://:6379/0' names no host: redis://host:port/db"),
    ("unix://", "'unix://' names no socket: unix:///path/to/redis.sock"),
    (
        "redis://h?socket_timeout=soon",
        "'redis://h?socket_timeout=soon' is refused by redis-py: "
        "Invalid value for 'socket_timeout' in connection URL.",
    ),
]


@pytest.mark.parametrize(("url", "message"), URL_CASES)
@pytest.mark.parametrize("module", [worker.settings, web.settings])
def test_a_malformed_redis_url_is_named(module, url, message):
    env = {"REDIS_URL": url, "HANDLER": "worker.example:handle", "HOST": "127.0.0.1"}
    with pytest.raises(module.SettingError) as exc:
        module.Settings.from_env(env)
    assert str(exc.value) == "REDIS_URL=" + message


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_says_a_url_without_scheme_in_one_line(command):
    # Found by a newcomer: a 30-line traceback from the worker, an escaped one from the web.
    env = {"REDIS_URL": "localhost:6399", "HANDLER": "worker.example:handle", "HOST": "127.0.0.1"}
    result = run(command, *(["list"] if command == "rsmq" else []), **env)
    who = "rsmq" if command == "rsmq" else command
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"{who}: bad setting: REDIS_URL={URL_CASES[0][1]}\n"


def test_the_cli_names_a_bad_url_option():
    result = run("rsmq", "--url", "redis://:pw@h/x", "list")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "rsmq: bad setting: --url='redis://:***@h/x' has the database 'x': give a number "
        "(redis://host:6379/0)\n"
    )


def test_the_cli_refuses_a_cluster_setting_that_is_no_boolean(redis_url):
    # It read "maybe" as false and went on.
    result = run("rsmq", "list", REDIS_URL=redis_url, REDIS_CLUSTER="maybe")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "rsmq: bad setting: REDIS_CLUSTER='maybe' is not a boolean (use true or false)\n"
    )


@pytest.mark.parametrize("module", [worker.settings, web.settings])
def test_the_processes_refuse_a_cluster_setting_that_is_no_boolean(module):
    env = {"REDIS_CLUSTER": "maybe", "HANDLER": "worker.example:handle", "HOST": "127.0.0.1"}
    with pytest.raises(module.SettingError) as exc:
        module.Settings.from_env(env)
    assert str(exc.value) == "REDIS_CLUSTER='maybe' is not a boolean (use true or false)"


# No Redis at the URL: the processes wait for it, and say once how to get one ------------------


@pytest.mark.parametrize("command", ["worker", "web"])
def test_a_process_without_redis_says_in_one_line_how_to_get_one(command, tmp_path):
    url = f"redis://:secret@127.0.0.1:{free_port()}/0"  # nothing listens there
    env = {
        "REDIS_URL": url,
        "HANDLER": "worker.example:handle",
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),
    }
    out = tmp_path / "out"
    with (
        open(out, "w") as sink,
        subprocess.Popen(
            COMMANDS[command], env=env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT
        ) as proc,
    ):
        try:
            line = wait_for(
                lambda: next((x for x in out.read_text().splitlines() if "No Redis?" in x), None),
                timeout=15,
                what="the line saying how to get a Redis",
            )
            assert proc.poll() is None  # it waits for Redis meanwhile
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
    assert line is not None and "redis://:***@127.0.0.1:" in line
    assert "is not reachable yet" in line
    assert "pip install 'rsmq-realtime[embedded]' and python -m rsmq_core.embedded" in line
    assert out.read_text().count("No Redis?") == 1 and "secret" not in out.read_text()


# The web app: no anonymous writes on a public address by accident ----------------------------

REFUSED = (
    "HOST={host!r} is reachable from other machines and API_TOKEN is not set, so anyone could "
    "send, delete and purge: set API_TOKEN to a secret, or ALLOW_ANONYMOUS=true to serve the "
    "API without one on purpose"
)


@pytest.mark.parametrize("host", [None, "0.0.0.0", "::", "192.0.2.7", "example.com"])
def test_the_web_app_without_token_refuses_a_public_address(host):
    env = {} if host is None else {"HOST": host}
    with pytest.raises(web.settings.SettingError) as exc:
        web.settings.Settings.from_env(env)
    assert str(exc.value) == REFUSED.format(host=host or "0.0.0.0")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_the_web_app_without_token_serves_loopback(host):
    settings = web.settings.Settings.from_env({"HOST": host})
    assert (settings.host, settings.api_token, settings.allow_anonymous) == (host, None, False)


def test_a_token_or_an_explicit_allow_opens_a_public_address():
    with_token = web.settings.Settings.from_env({"API_TOKEN": "s3cret-s3cret-s3cret"})
    assert (with_token.host, with_token.api_token) == ("0.0.0.0", "s3cret-s3cret-s3cret")
    anonymous = web.settings.Settings.from_env({"ALLOW_ANONYMOUS": "true"})
    assert (anonymous.host, anonymous.api_token, anonymous.allow_anonymous) == (
        "0.0.0.0",
        None,
        True,
    )
    with pytest.raises(web.settings.SettingError) as exc:
        web.settings.Settings.from_env({"ALLOW_ANONYMOUS": "perhaps", "API_TOKEN": "x" * 16})
    assert str(exc.value) == "ALLOW_ANONYMOUS='perhaps' is not a boolean (use true or false)"


def test_the_web_process_on_a_public_address_without_token_says_what_to_set():
    result = run("web", HOST="0.0.0.0", PORT=str(free_port()), REDIS_URL="redis://127.0.0.1:1/0")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "web: bad setting: " + REFUSED.format(host="0.0.0.0") + "\n"


# scripts/run (scripts/launch.py) ---------------------------------------------------------------


def launch(timeout: float, **env: str) -> subprocess.CompletedProcess[str]:
    """scripts/run's body with --once, in the environment given (and PATH). Past the
    timeout it is stopped as Ctrl-C stops it, so it stops what it started, then fails."""
    env |= {"PATH": os.environ["PATH"]}
    env.setdefault("PORT", str(free_port()))
    command = [sys.executable, str(ROOT / "scripts" / "launch.py"), "--once"]
    with subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
            raise AssertionError(f"still running after {timeout}s:\n{out}{err}") from None
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def test_run_says_in_one_sentence_within_10_s_that_redis_is_unreachable():
    # It printed about 100 warnings over 31 s and died with a raw TimeoutError.
    url = f"redis://:secret@127.0.0.1:{free_port()}/0"  # nothing listens there
    result = launch(timeout=10, REDIS_URL=url)
    assert (result.returncode, result.stdout) == (1, "")
    shown = url.replace("secret", "***")
    assert result.stderr.startswith(f"Redis at {shown} is unreachable (Error 111 connecting")
    assert result.stderr.endswith("): start it, or unset REDIS_URL to run an embedded one\n")
    assert result.stderr.count("\n") == 1 and "secret" not in result.stderr


def test_run_names_a_malformed_redis_url():
    result = launch(timeout=10, REDIS_URL="localhost:6399")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"bad setting: REDIS_URL={URL_CASES[0][1]}\n"


class HealthyImpostor(http.server.BaseHTTPRequestHandler):
    """Another instance of the app holding the port: it answers every health check."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_run_on_a_port_another_instance_holds_says_so_and_never_says_open():
    # It printed "Open ..." (the other instance answered), sent the demo, then failed.
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HealthyImpostor)
    serving = threading.Thread(target=other.serve_forever, daemon=True)
    serving.start()
    try:
        port = other.server_address[1]
        result = launch(timeout=30, PORT=str(port))
    finally:
        other.shutdown()
        other.server_close()
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        f"PORT {port} is in use (is the app already running?): stop what listens there, or set "
        "PORT to a free port\n"
    )


def test_run_names_a_bad_port():
    result = launch(timeout=10, PORT="http")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "bad setting: PORT='http' must be a port number, 1 to 65535\n"


def test_run_says_at_once_that_redis_refuses_the_password():
    server = EmbeddedRedis()
    try:
        server.start()
        with server.client() as admin:
            admin.config_set("requirepass", "right")
        url = f"redis://:wrong@127.0.0.1:{server.port}/0"
        result = launch(timeout=10, REDIS_URL=url)
    finally:
        server.cleanup()
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith(
        f"Redis at redis://:***@127.0.0.1:{server.port}/0 cannot be used: "
    )
    assert "check the user name and password in the URL" in result.stderr
    assert result.stderr.count("\n") == 1 and "wrong" not in result.stderr


# The README's examples ---------------------------------------------------------------------------

README_URL = "redis://localhost:6379/0"


def readme_block(heading: str) -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index(f"\n{heading}\n") :]
    start = section.index("```sh\n") + 6
    return section[start : section.index("\n```", start)]


def test_every_line_of_the_readme_cli_block_works_against_the_redis_it_names():
    # Found by a newcomer: --url on the first line only, so the others went to localhost:6379.
    block = readme_block("### CLI")
    assert README_URL in block.splitlines()[0]
    server = EmbeddedRedis()  # a Redis of this test's own: the block uses the namespace rsmq
    try:
        server.start()
        # The README's Redis is the machine's, which no test may touch: this test's stands in
        # for it. Any line not using the URL the block names goes to a closed port and fails.
        script = "set -euo pipefail\n" + block.replace(README_URL, server.url)
        env = {
            "PATH": f"{Path(RSMQ_BIN).parent}:{os.environ['PATH']}",
            "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        }
        result = subprocess.run(
            ["bash", "-c", script],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert (result.returncode, result.stderr) == (0, ""), result
        with server.client(decode_responses=True) as r:
            assert r.smembers("rsmq:QUEUES") == {"jobs-dead"}  # what the block leaves
            assert r.hget("rsmq:jobs-dead:Q", "vt") == "30"
    finally:
        server.cleanup()
    assert result.stdout.startswith("true\n")  # the create


# No test leaves a process behind -----------------------------------------------------------------

LEAKY_TESTS = """
import os
import subprocess

KEPT = []


def test_leaves_a_child():
    KEPT.append(subprocess.Popen(["sleep", "60"]))
    with open(os.environ["PIDS"], "a") as pids:
        pids.write(f"{KEPT[-1].pid}\\n")


def test_leaves_an_orphan():
    # The shell ends at once; its sleep lives on, with no parent but whoever adopts it.
    subprocess.run(["sh", "-c", 'sleep 60 & echo $! >> "$PIDS"'], check=True)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(sys.platform != "linux", reason="the check reads /proc")
def test_a_run_whose_tests_leave_processes_fails_and_kills_them(tmp_path):
    # A failing cluster test left its `python -m worker` processes running.
    (tmp_path / "test_leaky.py").write_text(LEAKY_TESTS)
    pids = tmp_path / "pids"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.leftovers",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            "-c",
            os.devnull,
            str(tmp_path / "test_leaky.py"),
        ],
        env={**os.environ, "PIDS": str(pids), "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    left = [int(pid) for pid in pids.read_text().split()]
    try:
        assert len(left) == 2
        assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout
        assert "2 passed" in result.stdout
        assert "processes left running by the tests (killed now)" in result.stdout
        for pid in left:
            assert f"{pid} sleep 60" in result.stdout
            assert not alive(pid)
    finally:
        for pid in left:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
