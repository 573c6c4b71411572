"""The secured-services fixture names a test's topics with the settings the processor and the
gateway really read (tests/secure_services.py, ``SecureEnv.topic_env``)."""

from __future__ import annotations

import pytest

from compose.kafka_acls import Topics
from gateway.settings import GatewaySettings
from processor.config import Settings
from tests.secure_services import SecureEnv

pytestmark = pytest.mark.unit


def test_topic_env_names_every_topic_and_group_for_the_processor_and_the_gateway(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topics = Topics("t.ev", "t.ve", "t.dl", "t.po", "t.re", "g-proc", "g-gw")
    for name, value in SecureEnv.topic_env(topics).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ALLOW_INSECURE_DEV_SECRET", "true")
    processor = Settings(_env_file=None)
    gateway = GatewaySettings(_env_file=None)
    assert (processor.events_topic, processor.verdicts_topic, processor.dlq_topic) == ("t.ev", "t.ve", "t.dl")
    assert (processor.policies_topic, processor.consumer_group) == ("t.po", "g-proc")
    assert processor.reply_topics == r"t\.re"
    assert (gateway.events_topic, gateway.gateway_replies_topic, gateway.gateway_consumer_group) == (
        "t.ev",
        "t.re",
        "g-gw",
    )
