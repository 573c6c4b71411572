"""When the console calls the ledger's figures stale (gateway/console/ledger_follower.py): until
Kafka has answered, while the backlog is read, and once Kafka has been silent too long."""

from __future__ import annotations

import time

from gateway.console.ledger import LedgerIndex
from gateway.console.ledger_follower import LedgerFollower


def test_the_ledger_is_stale_until_kafka_answered_while_catching_up_and_after_silence():
    follower = LedgerFollower("127.0.0.1:1", "verdicts", LedgerIndex())
    assert follower.staleness(10) == "Kafka has not answered yet"
    follower.checked_at, follower.behind = time.monotonic(), 1200
    assert follower.staleness(10) == "reading the ledger: 1200 verdicts to go"
    follower.caught_up, follower.behind = True, 0
    assert follower.staleness(10) is None
    follower.checked_at = time.monotonic() - 25
    follower.error = "KafkaConnectionError('Unable to bootstrap')"
    stale = follower.staleness(10)
    assert stale is not None and stale.startswith("Kafka has not answered for 25 s") and "bootstrap" in stale
