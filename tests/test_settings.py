"""worker.settings: every setting read from the environment, and every bad value named."""

from __future__ import annotations

import pytest

from worker import SettingError, Settings

HANDLER = {"HANDLER": "worker.example:handle"}  # required: no default


def test_defaults():
    s = Settings.from_env(HANDLER)
    assert (s.redis_url, s.ns, s.queues, s.handler) == (
        "redis://localhost:6379/0",
        "rsmq",
        ("jobs",),
        "worker.example:handle",
    )
    assert (s.realtime, s.poll_interval, s.concurrency, s.vt, s.max_receives) == (
        True,
        1.0,
        8,
        30,
        5,
    )
    assert s.shutdown_grace == 25.0  # Heroku kills 30 s after SIGTERM
    assert s.job_timeout is None  # no limit unless asked for
    assert s.result_max_bytes == 16_384
    assert s.dead_letter_queue("jobs") == "jobs-dead"


def test_every_setting_is_read():
    s = Settings.from_env(
        {
            "REDIS_URL": "redis://h:1/2",
            "RSMQ_NS": "x",
            "QUEUES": " a, b ,a,",
            "HANDLER": "m.n:f",
            "REALTIME": "off",
            "POLL_INTERVAL": "0.25",
            "CONCURRENCY": "3",
            "VT": "9",
            "MAX_RECEIVES": "2",
            "SHUTDOWN_GRACE": "0",
            "RETRY_BACKOFF": "0.5",
            "RETRY_BACKOFF_MAX": "60",
            "DEAD_LETTER_SUFFIX": "_dlq",
            "EVENT_TTL": "10",
            "HEARTBEAT": "1.5",
            "JOB_TIMEOUT": "2.5",
            "RESULT_MAX_BYTES": "100",
        }
    )
    assert s == Settings(
        redis_url="redis://h:1/2",
        ns="x",
        queues=("a", "b"),
        handler="m.n:f",
        realtime=False,
        poll_interval=0.25,
        concurrency=3,
        vt=9,
        max_receives=2,
        shutdown_grace=0,
        retry_backoff=0.5,
        retry_backoff_max=60,
        dead_letter_suffix="_dlq",
        event_ttl=10,
        heartbeat=1.5,
        job_timeout=2.5,
        result_max_bytes=100,
    )


@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_true_values(value):
    assert Settings.from_env({"REALTIME": value, **HANDLER}).realtime is True


def test_blank_means_default():
    assert Settings.from_env({"CONCURRENCY": "  ", "QUEUES": "", **HANDLER}).concurrency == 8


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CONCURRENCY": "x"}, "CONCURRENCY='x' is not a whole number"),
        ({"CONCURRENCY": "10001"}, "CONCURRENCY='10001' must be between 1 and 10000"),
        ({"VT": "10000000"}, "VT='10000000' must be between 1 and 9999999"),
        ({"MAX_RECEIVES": "0"}, "MAX_RECEIVES='0' must be at least 1"),
        ({"POLL_INTERVAL": "0"}, "POLL_INTERVAL='0' must be a finite number, at least 0.001"),
        ({"POLL_INTERVAL": "nan"}, "POLL_INTERVAL='nan' must be a finite number"),
        ({"SHUTDOWN_GRACE": "inf"}, "SHUTDOWN_GRACE='inf' must be a finite number"),
        ({"HEARTBEAT": "fast"}, "HEARTBEAT='fast' is not a number of seconds"),
        ({"REALTIME": "2"}, "REALTIME='2' is not a boolean"),
        ({"QUEUES": ",,"}, "QUEUES=',,': give comma-separated queue names"),
        ({"QUEUES": "ok,bad:name"}, "'bad:name' is not one"),
        ({"QUEUES": "q" * 157}, "not a valid queue name"),  # its dead-letter queue is too long
        ({"HANDLER": "module"}, "HANDLER='module' must look like 'package.module:function'"),
        ({"EVENT_TTL": "-5"}, "EVENT_TTL='-5' must be at least 1"),
        ({"RESULT_MAX_BYTES": "0"}, "RESULT_MAX_BYTES='0' must be between 1 and 65536"),
        ({"RESULT_MAX_BYTES": "2MB"}, "RESULT_MAX_BYTES='2MB' is not a whole number"),
        ({"RESULT_MAX_BYTES": "65537"}, "RESULT_MAX_BYTES='65537' must be between 1 and"),
        ({"JOB_TIMEOUT": "soon"}, "JOB_TIMEOUT='soon' is not a number of seconds"),
        *(
            (
                {"JOB_TIMEOUT": value},
                f"JOB_TIMEOUT={value!r} must be a finite number of seconds "
                "above 0 (leave it unset for no limit)",
            )
            for value in ("0", "-1", "nan", "inf")
        ),
    ],
)
def test_bad_values_name_the_setting(env, message):
    with pytest.raises(SettingError) as exc:
        Settings.from_env({**HANDLER, **env})
    assert message in str(exc.value)


@pytest.mark.parametrize(
    ("web", "worker", "message"),
    [
        ({"WS_BUFFER": "1.5"}, {"CONCURRENCY": "1.5"}, "='1.5' is not a whole number"),
        ({"MAX_BODY": "1e6"}, {"VT": "1e6"}, "='1e6' is not a whole number"),
        ({"HEAD_TIMEOUT": "soon"}, {"HEARTBEAT": "soon"}, "='soon' is not a number of seconds"),
        ({"BODY_TIMEOUT": "inf"}, {"SHUTDOWN_GRACE": "inf"}, "='inf' must be a finite number"),
        ({"REDIS_CLUSTER": "maybe"}, {"REDIS_CLUSTER": "maybe"}, "is not a boolean"),
        ({"LOG_LEVEL": "loud"}, {"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"REDIS_URL": "http://x"}, {"REDIS_URL": "http://x"}, "REDIS_URL"),
    ],
)
def test_the_web_app_and_the_worker_read_their_settings_alike(web, worker, message):
    """One reader (rsmq_core.environment) for both processes: a whole number is whole in
    both (the web app took WS_BUFFER=1.5 as 1), seconds are seconds, a flag is a flag."""
    from web.settings import Settings as WebSettings

    with pytest.raises(SettingError) as web_refusal:
        WebSettings.from_env({"HOST": "127.0.0.1", **web})
    with pytest.raises(SettingError) as worker_refusal:
        Settings.from_env({**HANDLER, **worker})
    assert message in str(web_refusal.value) and message in str(worker_refusal.value)
