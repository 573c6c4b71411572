"""Settings from environment variables (and `.env`), validated by load_settings()."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from processor.config import Settings, SettingsError, load_settings

SECRET = "a-long-random-test-secret-0123456789"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No setting from the caller's environment, and no .env from the repo."""
    monkeypatch.chdir(tmp_path)
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def refusal(**overrides: object) -> str:
    with pytest.raises(SettingsError) as info:
        load_settings(**overrides)
    return str(info.value)


def test_without_jwt_secret_start_is_refused_naming_jwt_secret_and_the_dev_escape_hatch() -> None:
    message = refusal()
    assert "JWT_SECRET" in message
    assert "ALLOW_INSECURE_DEV_SECRET" in message


def test_allow_insecure_dev_secret_from_env_permits_running_without_jwt_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ALLOW_INSECURE_DEV_SECRET", "true")
    settings = load_settings()
    assert settings.jwt_secret is None
    assert settings.allow_insecure_dev_secret is True


def test_jwt_secret_shorter_than_32_bytes_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_SECRET", "x" * 31)
    message = refusal()
    assert "JWT_SECRET" in message
    assert "32" in message


def test_jwt_secret_of_32_bytes_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_SECRET", "x" * 32)
    assert load_settings().jwt_secret.get_secret_value() == "x" * 32


def test_jwt_secret_length_is_counted_in_utf8_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_SECRET", "é" * 16)  # 16 characters, 32 bytes
    assert load_settings().jwt_secret.get_secret_value() == "é" * 16
    monkeypatch.setenv("JWT_SECRET", "é" * 15 + "x")  # 16 characters, 31 bytes
    assert "JWT_SECRET" in refusal()


def test_jwt_secret_is_not_shown_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_SECRET", SECRET)
    settings = load_settings()
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)


@pytest.mark.parametrize("value", ["0", "-1", "1001", "three"])
def test_invalid_max_streams_is_refused_naming_the_field(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("JWT_SECRET", SECRET)
    monkeypatch.setenv("MAX_STREAMS", value)
    assert "MAX_STREAMS" in refusal()


@pytest.mark.parametrize("value", ["drop", "REJECT_ALL", ""])
def test_overflow_policy_other_than_reject_or_evict_oldest_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("JWT_SECRET", SECRET)
    monkeypatch.setenv("OVERFLOW_POLICY", value)
    assert "OVERFLOW_POLICY" in refusal()


@pytest.mark.parametrize("policy", ["reject", "evict_oldest"])
def test_both_contract_overflow_policies_are_accepted(monkeypatch: pytest.MonkeyPatch, policy: str) -> None:
    monkeypatch.setenv("JWT_SECRET", SECRET)
    monkeypatch.setenv("OVERFLOW_POLICY", policy)
    assert load_settings().overflow_policy == policy


def test_lease_ttl_of_zero_is_refused_naming_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_SECRET", SECRET)
    monkeypatch.setenv("LEASE_TTL_SECONDS", "0")
    assert "LEASE_TTL_SECONDS" in refusal()


def test_several_errors_are_all_reported_in_one_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_SECRET", SECRET)
    monkeypatch.setenv("MAX_STREAMS", "0")
    monkeypatch.setenv("HTTP_PORT", "70000")
    message = refusal()
    assert "MAX_STREAMS" in message
    assert "HTTP_PORT" in message


def test_defaults_follow_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_SECRET", SECRET)
    s = load_settings()
    assert s.kafka_bootstrap_servers == "localhost:9092"
    assert s.redis_url == "redis://localhost:6379/0"
    assert (s.events_topic, s.verdicts_topic, s.dlq_topic) == (
        "playback.events",
        "playback.verdicts",
        "playback.events.dlq",
    )
    assert s.consumer_group == "concurrency-processor"
    assert (s.max_streams, s.lease_ttl_seconds, s.lease_ttl_ms) == (3, 90, 90_000)
    assert s.overflow_policy == "reject"
    assert s.topic_partitions == 12
    assert s.http_port == 8080
    assert s.jwt_algorithm == "HS256"


def test_contract_env_vars_map_to_settings_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "broker-1:19092,broker-2:19092",
        "REDIS_URL": "redis://cache:6380/2",
        "EVENTS_TOPIC": "ev",
        "VERDICTS_TOPIC": "vd",
        "DLQ_TOPIC": "dlq",
        "CONSUMER_GROUP": "grp",
        "MAX_STREAMS": "5",
        "LEASE_TTL_SECONDS": "45",
        "OVERFLOW_POLICY": "evict_oldest",
        "JWT_SECRET": SECRET,
        "TOPIC_PARTITIONS": "24",
        "HTTP_PORT": "9090",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = load_settings()
    assert s.kafka_bootstrap_servers == "broker-1:19092,broker-2:19092"
    assert s.redis_url == "redis://cache:6380/2"
    assert (s.events_topic, s.verdicts_topic, s.dlq_topic, s.consumer_group) == ("ev", "vd", "dlq", "grp")
    assert s.max_streams == 5
    assert (s.lease_ttl_seconds, s.lease_ttl_ms) == (45, 45_000)
    assert s.overflow_policy == "evict_oldest"
    assert s.jwt_secret.get_secret_value() == SECRET
    assert s.topic_partitions == 24
    assert s.http_port == 9090


def test_env_var_names_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("jwt_secret", SECRET)
    monkeypatch.setenv("max_streams", "7")
    assert load_settings().max_streams == 7


def test_settings_are_read_from_dot_env_in_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"JWT_SECRET={SECRET}\nMAX_STREAMS=4\n")
    s = load_settings()
    assert s.max_streams == 4
    assert s.jwt_secret.get_secret_value() == SECRET


def test_environment_variables_take_precedence_over_dot_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text(f"JWT_SECRET={SECRET}\nMAX_STREAMS=4\n")
    monkeypatch.setenv("MAX_STREAMS", "6")
    assert load_settings().max_streams == 6


def test_settings_are_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_SECRET", SECRET)
    s = load_settings()
    with pytest.raises(pydantic.ValidationError):
        s.max_streams = 10  # type: ignore[misc]


@pytest.mark.parametrize("algorithm", ["RS256", "EdDSA"])
def test_asymmetric_algorithm_without_private_key_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, algorithm: str
) -> None:
    monkeypatch.setenv("JWT_ALGORITHM", algorithm)
    assert "JWT_PRIVATE_KEY_FILE" in refusal()


def test_asymmetric_algorithm_with_missing_key_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JWT_ALGORITHM", "RS256")
    monkeypatch.setenv("JWT_PRIVATE_KEY_FILE", str(tmp_path / "absent.pem"))
    message = refusal()
    assert "JWT_PRIVATE_KEY_FILE" in message
    assert "absent.pem" in message


def test_asymmetric_algorithm_with_key_file_needs_no_jwt_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pem = tmp_path / "key.pem"
    pem.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    monkeypatch.setenv("JWT_ALGORITHM", "EdDSA")
    monkeypatch.setenv("JWT_PRIVATE_KEY_FILE", str(pem))
    s = load_settings()
    assert (s.jwt_algorithm, s.jwt_private_key_file, s.jwt_secret) == ("EdDSA", pem, None)


def test_unknown_jwt_algorithm_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_SECRET", SECRET)
    monkeypatch.setenv("JWT_ALGORITHM", "none")
    assert "JWT_ALGORITHM" in refusal()


def test_keyword_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_SECRET", SECRET)
    monkeypatch.setenv("MAX_STREAMS", "5")
    assert load_settings(max_streams=2).max_streams == 2


def test_idle_user_ttl_shorter_than_four_lease_ttls_is_refused_naming_both_settings_and_the_minimum(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JWT_SECRET", SECRET)
    monkeypatch.setenv("LEASE_TTL_SECONDS", "90")
    monkeypatch.setenv("IDLE_USER_TTL_SECONDS", "359")
    message = refusal()
    assert "IDLE_USER_TTL_SECONDS=359" in message
    assert "LEASE_TTL_SECONDS" in message.replace("IDLE_USER_TTL_SECONDS", "")
    assert "at least 360" in message


def test_idle_user_ttl_of_exactly_four_lease_ttls_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_SECRET", SECRET)
    monkeypatch.setenv("LEASE_TTL_SECONDS", "90")
    monkeypatch.setenv("IDLE_USER_TTL_SECONDS", "360")
    assert load_settings().idle_user_ttl_seconds == 360


def test_a_long_lease_ttl_with_the_default_idle_user_ttl_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_SECRET", SECRET)
    monkeypatch.setenv("LEASE_TTL_SECONDS", "30000")  # 4 x 30000 = 120000 > the default 86400
    message = refusal()
    assert "IDLE_USER_TTL_SECONDS=86400" in message
    assert "at least 120000" in message


def test_the_default_idle_user_ttl_fits_the_default_lease_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_SECRET", SECRET)
    s = load_settings()
    assert s.idle_user_ttl_seconds == 86_400
    assert s.idle_user_ttl_seconds >= 4 * s.lease_ttl_seconds


def test_allow_evicting_redis_is_off_by_default_and_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JWT_SECRET", SECRET)
    assert load_settings().allow_evicting_redis is False
    monkeypatch.setenv("ALLOW_EVICTING_REDIS", "true")
    assert load_settings().allow_evicting_redis is True
