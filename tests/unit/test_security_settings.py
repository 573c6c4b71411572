"""The Kafka and Redis security settings (contract: Secured Kafka and Redis): each mistake gets a
clear refusal at start, and no secret shows in a settings dump, a repr or an error."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.settings import GatewaySettings, load_gateway_settings
from processor.config import Settings, SettingsError, load_settings
from processor.connections import kafka_access, redis_access
from producer_sim.settings import SimSettings

PASSWORD = "s3cret-p4ss/word@x"  # '@' and '/' as a URL would quote them
QUOTED = "s3cret-p4ss%2Fword%40x"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in GatewaySettings.model_fields | Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("ALLOW_INSECURE_DEV_SECRET", "true")


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    path = tmp_path / "x.pem"
    path.write_text("not read by the settings, only checked to exist\n")
    return path


def refusal(**overrides: object) -> str:
    with pytest.raises(SettingsError) as info:
        load_settings(**overrides)
    return str(info.value)


def test_sasl_protocol_without_mechanism_user_or_password_is_refused_naming_the_missing_setting():
    assert "KAFKA_SASL_MECHANISM" in refusal(kafka_security_protocol="SASL_SSL")
    assert "KAFKA_SASL_USERNAME" in refusal(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="PLAIN")
    message = refusal(
        kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="PLAIN", kafka_sasl_username="p"
    )
    assert "KAFKA_SASL_PASSWORD" in message


def test_a_mechanism_without_a_sasl_protocol_is_refused_naming_the_protocol_to_set():
    message = refusal(kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username="p", kafka_sasl_password="x")
    assert "KAFKA_SASL_MECHANISM" in message and "SASL_SSL" in message


def test_an_unknown_protocol_or_mechanism_is_refused():
    assert "KAFKA_SECURITY_PROTOCOL" in refusal(kafka_security_protocol="TLS")
    assert "KAFKA_SASL_MECHANISM" in refusal(
        kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="GSSAPI", kafka_sasl_username="p"
    )


def test_a_client_certificate_without_its_key_is_refused(pem: Path):
    message = refusal(kafka_security_protocol="SSL", kafka_ssl_cert_file=pem)
    assert "KAFKA_SSL_CERT_FILE" in message and "KAFKA_SSL_KEY_FILE" in message
    message = refusal(redis_url="rediss://h:1/0", redis_ssl_key_file=pem)
    assert "REDIS_SSL_KEY_FILE" in message and "REDIS_SSL_CERT_FILE" in message


def test_a_missing_file_is_refused_naming_the_setting_and_the_path(tmp_path: Path):
    missing = tmp_path / "nope.pem"
    message = refusal(kafka_security_protocol="SSL", kafka_ssl_ca_file=missing)
    assert "KAFKA_SSL_CA_FILE" in message and str(missing) in message
    assert "REDIS_PASSWORD_FILE" in refusal(redis_password_file=missing)


def test_tls_files_without_a_tls_protocol_or_url_are_refused(pem: Path):
    assert "KAFKA_SECURITY_PROTOCOL=SSL" in refusal(kafka_ssl_ca_file=pem)
    assert "rediss://" in refusal(redis_ssl_ca_file=pem)


def test_two_passwords_for_one_user_are_refused(pem: Path):
    assert "both" in refusal(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="p",
        kafka_sasl_password="x",
        kafka_sasl_password_file=pem,
    )
    assert "REDIS_PASSWORD_FILE" in refusal(redis_url=f"rediss://u:{QUOTED}@h:1/0", redis_password_file=pem)


def test_the_password_of_redis_url_is_taken_out_of_the_url_and_shown_nowhere(monkeypatch):
    monkeypatch.setenv("REDIS_URL", f"rediss://processor:{QUOTED}@127.0.0.1:6390/0")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "processor")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", PASSWORD)
    for settings in (load_settings(), load_gateway_settings()):
        assert settings.redis_url == "rediss://processor@127.0.0.1:6390/0"
        shown = [repr(settings), str(settings), str(settings.model_dump()), settings.model_dump_json()]
        shown += [repr(kafka_access(settings)), repr(redis_access(settings))]
        for text in shown:
            assert PASSWORD not in text and QUOTED not in text
        # ... and the clients still get it.
        assert redis_access(settings).client_kwargs()["password"] == PASSWORD
        assert kafka_access(settings).client_kwargs()["sasl_plain_password"] == PASSWORD


def test_a_password_file_is_read_when_a_client_is_made_so_a_rotation_needs_no_restart(tmp_path: Path):
    secret = tmp_path / "kafka.pw"
    secret.write_text("first\n")
    settings = load_settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="processor",
        kafka_sasl_password_file=secret,
    )
    kafka = kafka_access(settings)
    assert kafka.client_kwargs()["sasl_plain_password"] == "first"
    secret.write_text("second\n")
    assert kafka.client_kwargs()["sasl_plain_password"] == "second"


def test_plaintext_clients_get_no_security_arguments():
    kafka = kafka_access(load_settings())
    assert kafka.client_kwargs() == {"bootstrap_servers": "localhost:9092"}
    assert redis_access(load_settings()).client_kwargs() == {}


def test_a_refused_setting_shows_no_secret_even_where_the_error_is_printed_as_it_is(monkeypatch):
    # A whole-model check's input is every setting: the simulator's CLI prints the error as it is.
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "kafka-secret-pw")
    monkeypatch.setenv("REDIS_URL", "redis://:redis-secret-pw@h/0")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "PLAIN")  # refused: PLAINTEXT does not use SASL
    with pytest.raises(ValidationError) as caught:
        SimSettings()
    text = str(caught.value)
    assert "KAFKA_SECURITY_PROTOCOL" in text
    assert "secret-pw" not in text
