"""rsmq_core.connection: the options, what they ask of redis-py, and the settings that read
them (tests/test_tls.py connects for real)."""

from __future__ import annotations

import ssl

import pytest
import redis

import web.settings
import worker.settings
from rsmq_core import ConnectionOptions
from rsmq_core.connection import explain, is_misconfigured

HERE = __file__  # a file that exists and can be read


def test_verification_is_on_by_default_with_host_names():
    assert ConnectionOptions().redis_kwargs("rediss://h:1/0") == {
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
    }


def test_every_option_reaches_redis_py():
    options = ConnectionOptions(tls_ca_file="ca", tls_cert_file="c", tls_key_file="k")
    assert options.redis_kwargs("rediss://h:1/0") == {
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
        "ssl_ca_certs": "ca",
        "ssl_certfile": "c",
        "ssl_keyfile": "k",
    }
    assert ConnectionOptions(tls_verify="none").redis_kwargs("rediss://h") == {
        "ssl_cert_reqs": "none",
        "ssl_check_hostname": False,
    }


def test_a_plain_url_gets_no_tls_arguments():
    assert ConnectionOptions(tls_verify="none").redis_kwargs("redis://h:1/0") == {}
    assert ConnectionOptions().redis_kwargs("unix:///tmp/redis.sock") == {}


def test_files_that_ask_for_tls_on_a_plain_url_are_refused():
    with pytest.raises(ValueError, match="scheme is 'redis', which does not use TLS: use rediss"):
        ConnectionOptions(tls_ca_file="ca").redis_kwargs("redis://h:1/0")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tls_verify": "optional"}, "tls_verify='optional': use 'required'"),
        ({"tls_key_file": "k"}, "tls_key_file is set without tls_cert_file"),
        ({"tls_verify": "none", "tls_ca_file": "ca"}, "tls_ca_file is set but tls_verify is"),
    ],
)
def test_contradictions_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        ConnectionOptions(**fields)


def test_from_env():
    env = {"REDIS_TLS_VERIFY": " NONE ", "REDIS_TLS_CERT_FILE": HERE, "REDIS_TLS_CA_FILE": ""}
    assert ConnectionOptions.from_env(env) == ConnectionOptions(
        tls_verify="none", tls_cert_file=HERE
    )
    assert ConnectionOptions.from_env({}) == ConnectionOptions()


BAD_ENV = [
    ({"REDIS_TLS_VERIFY": "off"}, "REDIS_TLS_VERIFY='off': use 'required'"),
    ({"REDIS_TLS_CA_FILE": "/no/ca.pem"}, "REDIS_TLS_CA_FILE='/no/ca.pem': no such file"),
    ({"REDIS_TLS_KEY_FILE": HERE}, "REDIS_TLS_KEY_FILE is set without REDIS_TLS_CERT_FILE"),
    (
        {"REDIS_TLS_VERIFY": "none", "REDIS_TLS_CA_FILE": HERE},
        "REDIS_TLS_CA_FILE is set but REDIS_TLS_VERIFY is 'none'",
    ),
    (
        {"REDIS_URL": "redis://h:1/0", "REDIS_TLS_CA_FILE": HERE},
        "REDIS_URL: a TLS CA or client certificate is set, but the URL's scheme is 'redis'",
    ),
]


# What each process needs to start at all (the worker has no default HANDLER, the web app
# needs API_TOKEN on a public HOST).
STARTS = {"HANDLER": "worker.example:handle", "HOST": "127.0.0.1"}


@pytest.mark.parametrize(("env", "message"), BAD_ENV)
def test_the_worker_names_a_bad_tls_setting(env, message):
    with pytest.raises(worker.settings.SettingError) as caught:
        worker.settings.Settings.from_env(STARTS | env)
    assert message in str(caught.value)


@pytest.mark.parametrize(("env", "message"), BAD_ENV)
def test_the_web_app_names_a_bad_tls_setting(env, message):
    with pytest.raises(web.settings.SettingError) as caught:
        web.settings.Settings.from_env(env)
    assert message in str(caught.value)


@pytest.mark.parametrize("module", [worker.settings, web.settings])
def test_both_processes_read_the_tls_settings(module):
    env = {"REDIS_URL": "rediss://u:p@h:1/0", "REDIS_TLS_CA_FILE": HERE, **STARTS}
    settings = module.Settings.from_env(env)
    assert settings.connection == ConnectionOptions(tls_ca_file=HERE)
    assert module.Settings.from_env(STARTS).connection == ConnectionOptions()


def test_only_settings_no_retry_can_cure_count_as_misconfigured():
    refused = redis.ConnectionError("Error 111 connecting to h:1. Connection refused.")
    assert not is_misconfigured(refused)
    assert explain(refused) == "Error 111 connecting to h:1. Connection refused."
    wrapped = redis.ConnectionError("connecting failed")
    wrapped.__cause__ = ssl.SSLCertVerificationError("certificate verify failed")
    assert is_misconfigured(wrapped) and "REDIS_TLS_CA_FILE" in explain(wrapped)
    assert is_misconfigured(redis.AuthenticationError("invalid username-password pair"))
    denied = redis.exceptions.NoPermissionError("no permissions to run the 'evalsha' command")
    assert is_misconfigured(denied) and "README's ACL rule" in explain(denied)
    assert not is_misconfigured(redis.ResponseError("WRONGTYPE"))
    assert explain(redis.ConnectionError("two\nlines")) == "two lines"
