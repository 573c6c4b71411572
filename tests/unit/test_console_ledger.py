"""The console's ledger index (gateway/console/ledger.py): the live picture and each account's
recent decisions, from verdict values as the processor writes them."""

from __future__ import annotations

import orjson

from gateway.console.ledger import MINUTE_MS, LedgerIndex

T0 = 1_763_800_020_000  # 20 s into a minute
MINUTE = T0 // MINUTE_MS


def verdict(vid: str, user: str, session: str, reason: str, decision: str, at: int, **extra: object) -> bytes:
    kind = {"started": "start", "renewed": "heartbeat", "stopped": "stop", "expired": "expire"}.get(
        reason, "start"
    )
    value = {
        "verdictId": vid, "eventId": vid, "userId": user, "sessionId": session, "type": kind,
        "decision": decision, "reason": reason, "activeStreams": 1, "maxStreams": 3,
        "leaseExpiresAt": None, "decidedAt": at, "token": "secret.jwt.value", "policy": "default", **extra,
    }  # fmt: skip
    return orjson.dumps(value)


def test_active_streams_by_class_and_denies_per_minute_follow_starts_and_every_kind_of_end():
    index = LedgerIndex(history_minutes=5)
    index.add(verdict("v1", "u1", "tv", "started", "allow", T0, deviceClass="tv"))
    index.add(verdict("v2", "u1", "phone", "started", "allow", T0 + 1, deviceClass="mobile"))
    index.add(verdict("v3", "u2", "web", "started", "allow", T0 + 2))  # no class
    index.add(verdict("v4", "u1", "x", "limit_exceeded", "deny", T0 + 3))
    index.add(verdict("v5", "u1", "tv", "renewed", "allow", T0 + MINUTE_MS))  # changes nothing
    index.add(verdict("v6", "u1", "tv", "terminated", "revoke", T0 + MINUTE_MS))
    index.add(verdict("v7", "u2", "web", "expired", "revoke", T0 + 2 * MINUTE_MS))
    index.add(verdict("v8", "u1", "phone", "stopped", "allow", T0 + 2 * MINUTE_MS))
    index.add(verdict("v9", "u9", "never-seen", "evicted", "revoke", T0 + 2 * MINUTE_MS))  # start unseen
    index.add(verdict("v2", "u1", "phone", "started", "allow", T0 + 1, deviceClass="mobile"))  # redelivered
    picture = index.series(T0 + 2 * MINUTE_MS)
    assert picture["classes"] == [{"deviceClass": "tv"}, {"deviceClass": "mobile"}, {"deviceClass": None}]
    by_minute = {m["at"] // MINUTE_MS: (m["active"], m["byClass"], m["denies"]) for m in picture["minutes"]}
    assert len(by_minute) == 5
    assert by_minute[MINUTE - 1] == (0, [0, 0, 0], 0)
    assert by_minute[MINUTE] == (3, [1, 1, 1], 1)
    assert by_minute[MINUTE + 1] == (2, [0, 1, 1], 0)
    assert by_minute[MINUTE + 2] == (0, [0, 0, 0], 0)
    assert index.active_sessions() == 0
    assert index.stats()["verdictsRead"] == 10


def test_minutes_leaving_the_window_fold_into_the_baseline_and_keep_the_count():
    index = LedgerIndex(history_minutes=3)
    index.add(verdict("v1", "u1", "a", "started", "allow", T0))
    index.add(verdict("v2", "u1", "b", "started", "allow", T0))
    index.add(verdict("v3", "u1", "z", "limit_exceeded", "deny", T0))
    later = T0 + 10 * MINUTE_MS
    index.add(verdict("v4", "u1", "a", "stopped", "allow", later))
    minutes = index.series(later)["minutes"]
    assert [(m["active"], m["denies"]) for m in minutes] == [(2, 0), (2, 0), (1, 0)]
    # A late verdict from before the window still counts in the baseline.
    index.add(verdict("v5", "u2", "c", "started", "allow", T0 - MINUTE_MS))
    assert index.series(later)["minutes"][-1]["active"] == 2


def test_an_account_keeps_its_last_few_decisions_newest_first_without_the_token():
    index = LedgerIndex(recent_per_user=2)
    index.add(verdict("v1", "u1", "a", "started", "allow", T0))
    conflicts = [{"sessionId": "a", "deviceId": "<img src=x onerror=alert(1)>"}]
    index.add(
        verdict(
            "v2", "u1", "b", "limit_exceeded", "deny", T0 + 1, conflicts=conflicts, nextFreeAt=T0 + 90_000
        )
    )
    index.add(verdict("v3", "u1", "c", "started", "allow", T0 + 2, policy="plan:gold"))
    index.add(verdict("v2", "u1", "b", "limit_exceeded", "deny", T0 + 1))  # a redelivery: no duplicate
    recent = index.recent("u1")
    assert [v["verdictId"] for v in recent] == ["v3", "v2"]
    assert recent[1]["conflicts"] == conflicts and recent[1]["nextFreeAt"] == T0 + 90_000
    assert all("token" not in v and "userId" not in v for v in recent)
    assert index.last_plan("u1") == "gold"
    assert index.recent("nobody") == []


def test_the_accounts_are_bounded_least_recently_decided_first_and_bad_values_are_counted():
    index = LedgerIndex(max_users=2)
    for i, user in enumerate(["u1", "u2", "u1", "u3"]):
        index.add(verdict(f"v{i}", user, "s", "limit_exceeded", "deny", T0 + i))
    assert (index.recent("u2"), len(index.recent("u1")), len(index.recent("u3"))) == ([], 2, 1)
    for bad in (b"not json", b"[1]", b'{"userId": 1}', None):
        index.add(bad)
    assert index.stats()["badValues"] == 3  # None (a tombstone) is no verdict and no error


def test_device_classes_beyond_the_bound_are_counted_together():
    index = LedgerIndex(max_classes=2)
    for i, cls in enumerate(["tv", "mobile", "evil-1", "evil-2"]):
        index.add(verdict(f"v{i}", f"u{i}", "s", "started", "allow", T0, deviceClass=cls))
    picture = index.series(T0)
    assert picture["classes"] == [{"deviceClass": "tv"}, {"deviceClass": "mobile"}, {"others": True}]
    assert picture["minutes"][-1]["byClass"] == [1, 1, 2]


def test_a_terminates_own_verdict_ends_only_its_target_by_the_revoke_not_the_requester():
    # A terminate from A of B: its own verdict (allow/terminated) names the requester A, who keeps
    # watching; the revoke that follows ends B. (The index once ended both.)
    index = LedgerIndex(history_minutes=5)
    index.add(verdict("v1", "u1", "A", "started", "allow", T0))
    index.add(verdict("v2", "u1", "B", "started", "allow", T0 + 1))
    index.add(verdict("v3", "u1", "A", "terminated", "allow", T0 + 2, type="terminate"))
    index.add(verdict("v4", "u1", "B", "terminated", "revoke", T0 + 2, type="terminate"))
    assert index.active_sessions() == 1
    assert index.series(T0 + 2)["minutes"][-1]["active"] == 1
