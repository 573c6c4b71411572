"""build_verdicts / event_identity: the verdict records of the contract, byte for byte."""

from __future__ import annotations

import jwt
import orjson
import pytest

from processor import rules
from processor.script_results import Result
from processor.tokens import HS256Signer
from processor.verdicts import build_verdicts, event_identity
from processor.wire import DecodedEvent, Verdict

SECRET = "verdict-tests-secret-0123456789abcdef"
SIGNER = HS256Signer(SECRET.encode())
NOW = 1_700_000_000_000
EXPIRES = NOW + 90_000
TOPIC = "playback.events"

CONTRACT_KEYS = {
    "verdictId",
    "eventId",
    "userId",
    "sessionId",
    "type",
    "decision",
    "reason",
    "activeStreams",
    "maxStreams",
    "leaseExpiresAt",
    "decidedAt",
    "token",
    "policy",
}
ADVICE_KEYS = {"conflicts", "nextFreeAt"}  # on limit_exceeded / device_class_limit denies only

# (event type, result code, decision, reason, holds a lease / gets a token) -- the contract's table.
RULE_TABLE = [
    ("start", rules.ALREADY_ACTIVE, "allow", "already_active", True),
    ("start", rules.STARTED, "allow", "started", True),
    ("start", rules.LIMIT_EXCEEDED, "deny", "limit_exceeded", False),
    ("heartbeat", rules.RENEWED, "allow", "renewed", True),
    ("heartbeat", rules.NO_LEASE, "deny", "no_lease", False),
    ("stop", rules.STOPPED, "allow", "stopped", False),
    ("stop", rules.NOT_ACTIVE, "allow", "not_active", False),
    ("start", rules.DEVICE_CLASS_LIMIT, "deny", "device_class_limit", False),
    ("terminate", rules.TERMINATED, "allow", "terminated", False),
    ("terminate", rules.NOT_ACTIVE, "allow", "not_active", False),
]


def ev(
    kind: str = "start",
    user: str = "u-42",
    session: str = "s-1",
    event_id: str | None = "e-1",
    target: str | None = None,
    plan: str | None = None,
    device_class: str | None = None,
) -> DecodedEvent:
    if kind == "terminate" and target is None:
        target = "s-target"
    return DecodedEvent(kind, user, session, event_id, "tv", None, target, plan, device_class)


def result(code: int, active: int = 1, max_streams: int = 3, expires: int = EXPIRES, now: int = NOW) -> list:
    return [code, active, max_streams, expires, now]


def build(event: DecodedEvent, res: list, partition: int = 0, offset: int = 10) -> list[dict]:
    return [orjson.loads(v) for v in build_verdicts(event, res, TOPIC, partition, offset, SIGNER)]


@pytest.mark.parametrize(
    ("kind", "code", "decision", "reason", "holds_lease"),
    RULE_TABLE,
    ids=[f"{k}-{r}" for k, _, _, r, _ in RULE_TABLE],
)
def test_each_result_code_yields_the_contract_decision_reason_and_token_rule(
    kind: str, code: int, decision: str, reason: str, holds_lease: bool
) -> None:
    [verdict] = build(ev(kind), result(code, active=2, max_streams=3))
    assert (verdict["decision"], verdict["reason"]) == (decision, reason)
    assert verdict["type"] == kind
    assert (verdict["activeStreams"], verdict["maxStreams"], verdict["decidedAt"]) == (2, 3, NOW)
    if holds_lease:
        assert verdict["leaseExpiresAt"] == EXPIRES
        claims = jwt.decode(verdict["token"], SECRET, algorithms=["HS256"], options={"verify_exp": False})
        assert (claims["sub"], claims["sid"]) == (verdict["userId"], verdict["sessionId"])
    else:
        assert verdict["leaseExpiresAt"] is None
        assert verdict["token"] is None


def test_result_codes_cover_exactly_the_contract_table() -> None:
    assert set(rules.OUTCOMES) == {code for _, code, *_ in RULE_TABLE}
    assert rules.HOLDS_LEASE == {code for _, code, _, _, holds in RULE_TABLE if holds}
    assert rules.ADVISED == {rules.LIMIT_EXCEEDED, rules.DEVICE_CLASS_LIMIT}
    assert (rules.TERMINATED, rules.DEVICE_CLASS_LIMIT) == (9, 10)


@pytest.mark.parametrize(("kind", "code"), [("start", rules.STARTED), ("heartbeat", rules.RENEWED)])
def test_allow_token_verifies_and_names_user_session_expiry_and_verdict_id(kind: str, code: int) -> None:
    [verdict] = build(ev(kind), result(code))
    claims = jwt.decode(verdict["token"], SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert claims["sub"] == "u-42"
    assert claims["sid"] == "s-1"
    assert claims["exp"] == EXPIRES // 1000
    assert claims["iat"] == NOW // 1000
    assert claims["jti"] == verdict["verdictId"]


@pytest.mark.parametrize(("kind", "code"), [(k, c) for k, c, *_ in RULE_TABLE])
def test_verdict_carries_the_event_ids_and_exactly_the_contract_keys(kind: str, code: int) -> None:
    [verdict] = build(ev(kind, user="u-7", session="s-7", event_id="e-7"), result(code))
    assert set(verdict) == CONTRACT_KEYS | (ADVICE_KEYS if code in rules.ADVISED else set())
    assert (verdict["userId"], verdict["sessionId"], verdict["eventId"]) == ("u-7", "s-7", "e-7")


def assert_is_the_verdict_model_exactly(value: bytes) -> None:
    """Validates, and every key is a model field holding its value as is: the model ignores
    unknown keys, so a key misspelt in the record would otherwise pass unseen."""
    parsed = Verdict.model_validate_json(value)
    assert parsed.model_dump(mode="json", exclude_unset=True) == orjson.loads(value)


@pytest.mark.parametrize(("kind", "code"), [(k, c) for k, c, *_ in RULE_TABLE])
def test_every_verdict_validates_against_the_verdict_model(kind: str, code: int) -> None:
    [value] = build_verdicts(ev(kind), result(code), TOPIC, 0, 1, SIGNER)
    assert_is_the_verdict_model_exactly(value)


def test_same_user_and_event_id_at_different_offsets_share_the_verdict_id() -> None:
    a = build(ev(), result(rules.STARTED), partition=0, offset=10)[0]
    b = build(ev(), result(rules.STARTED), partition=3, offset=99)[0]
    assert a["verdictId"] == b["verdictId"]
    assert a == b


def test_same_event_id_of_different_users_gives_different_verdict_ids() -> None:
    a = build(ev(user="u-1"), result(rules.STARTED))[0]
    b = build(ev(user="u-2"), result(rules.STARTED))[0]
    assert a["verdictId"] != b["verdictId"]


def test_different_event_ids_of_one_user_give_different_verdict_ids() -> None:
    a = build(ev(event_id="e-1"), result(rules.STARTED))[0]
    b = build(ev(event_id="e-2"), result(rules.STARTED))[0]
    assert a["verdictId"] != b["verdictId"]


def test_without_event_id_same_position_gives_same_verdict_id_and_position_as_event_id() -> None:
    a = build(ev(event_id=None), result(rules.STARTED), partition=2, offset=41)[0]
    b = build(ev(event_id=None), result(rules.STARTED), partition=2, offset=41)[0]
    assert a["verdictId"] == b["verdictId"]
    assert a["eventId"] == b["eventId"] == f"{TOPIC}/2/41"


@pytest.mark.parametrize(("partition", "offset"), [(2, 42), (3, 41), (0, 0)])
def test_without_event_id_another_position_gives_another_verdict_id(partition: int, offset: int) -> None:
    a = build(ev(event_id=None), result(rules.STARTED), partition=2, offset=41)[0]
    b = build(ev(event_id=None), result(rules.STARTED), partition=partition, offset=offset)[0]
    assert a["verdictId"] != b["verdictId"]


def test_without_event_id_another_topic_gives_another_verdict_id() -> None:
    event = ev(event_id=None)
    a = build_verdicts(event, result(rules.STARTED), "topic-a", 0, 5, SIGNER)[0]
    b = build_verdicts(event, result(rules.STARTED), "topic-b", 0, 5, SIGNER)[0]
    assert orjson.loads(a)["verdictId"] != orjson.loads(b)["verdictId"]


def test_event_id_identity_differs_from_position_identity() -> None:
    with_id = event_identity("e-1", "u", TOPIC, 0, 1)
    without = event_identity(None, "u", TOPIC, 0, 1)
    assert with_id[0] == "e-1"
    assert without[0] == f"{TOPIC}/0/1"
    assert with_id[1] != without[1]


def test_event_identity_with_event_id_ignores_the_position() -> None:
    assert event_identity("e-1", "u", TOPIC, 0, 1) == event_identity("e-1", "u", "other", 5, 900)


def test_evicted_sessions_get_revoke_verdicts_after_the_events_own() -> None:
    res = [*result(rules.STARTED, active=3, max_streams=3), ["s-old-1", "s-old-2"]]
    verdicts = build(ev("start", session="s-new"), res)
    assert len(verdicts) == 3
    own, *revokes = verdicts
    assert (own["sessionId"], own["decision"], own["reason"]) == ("s-new", "allow", "started")
    assert [r["sessionId"] for r in revokes] == ["s-old-1", "s-old-2"]
    for revoke in revokes:
        assert set(revoke) == CONTRACT_KEYS
        assert (revoke["decision"], revoke["reason"]) == ("revoke", "evicted")
        assert revoke["token"] is None
        assert revoke["leaseExpiresAt"] is None
        assert revoke["userId"] == "u-42"
        assert revoke["eventId"] == own["eventId"]
        assert (revoke["activeStreams"], revoke["maxStreams"], revoke["decidedAt"]) == (3, 3, NOW)
    assert len({v["verdictId"] for v in verdicts}) == 3


def test_revoke_verdicts_validate_against_the_verdict_model() -> None:
    res = [*result(rules.STARTED), ["s-old"]]
    own, revoke = build_verdicts(ev(), res, TOPIC, 0, 1, SIGNER)
    assert orjson.loads(revoke)["decision"] == "revoke"
    assert_is_the_verdict_model_exactly(own)
    assert_is_the_verdict_model_exactly(revoke)


def test_revoke_verdict_ids_are_stable_across_redelivery_at_another_offset() -> None:
    res = [*result(rules.STARTED), ["s-old"]]
    first = build(ev(), res, partition=0, offset=1)
    again = build(ev(), res, partition=0, offset=500)
    assert [v["verdictId"] for v in first] == [v["verdictId"] for v in again]


def test_empty_eviction_list_adds_no_revoke_verdict() -> None:
    assert len(build(ev(), [*result(rules.STARTED), []])) == 1


@pytest.mark.parametrize("event_id", ["e-1", None])
def test_output_is_byte_identical_across_calls_and_signer_instances(event_id: str | None) -> None:
    res = [*result(rules.STARTED), ["s-old"]]
    first = build_verdicts(ev(event_id=event_id), res, TOPIC, 1, 7, SIGNER)
    second = build_verdicts(ev(event_id=event_id), list(res), TOPIC, 1, 7, HS256Signer(SECRET.encode()))
    assert first == second
    assert len(first) == 2 and all(isinstance(v, bytes) for v in first)  # the verdict and a revoke


# --------------------------------------------------------------------------------------------
# ids may contain any character (NUL included): identities must never collide
# --------------------------------------------------------------------------------------------


def test_distinct_user_and_event_id_pairs_never_share_a_verdict_id() -> None:
    a = build(ev(user="a\x00b", event_id="c"), result(rules.STARTED))[0]
    b = build(ev(user="a", event_id="b\x00c"), result(rules.STARTED))[0]
    assert a["verdictId"] != b["verdictId"]


def test_revoke_verdict_id_never_equals_another_events_verdict_id() -> None:
    revoke = build(ev(event_id="e-1"), [*result(rules.STARTED), ["s-old"]])[1]
    other = build(ev(event_id="e-1\x00revoke\x00s-old"), result(rules.STARTED))[0]
    assert revoke["verdictId"] != other["verdictId"]


# --------------------------------------------------------------------------------------------
# policies, deny advice, terminate (contract "Policies", "Deny advice", "Terminate")
# --------------------------------------------------------------------------------------------

# [sessionId, deviceId, deviceClass, contentId, startedAt, leaseExpiresAt], oldest start first
CONFLICTS = [
    ["s-tv", "tv-livingroom", "tv", "c-1", NOW - 60_000, NOW + 50_000],
    ["s-ph", None, "mobile", None, NOW - 30_000, NOW + 20_000],
    ["s-old", None, None, None, None, NOW + 70_000],  # a lease from before policies: no start, no class
]


def deny(code: int = rules.LIMIT_EXCEEDED, conflicts: list | None = CONFLICTS, policy: str = "d") -> Result:
    return Result(code, len(conflicts or ()), 3, 0, NOW, [], policy, conflicts)


@pytest.mark.parametrize(
    ("kind", "plan", "name"),
    [
        ("u", None, "user:u-42"),
        ("u", "gold", "user:u-42"),
        ("p", "gold", "plan:gold"),
        ("d", "gold", "default"),
    ],
)
def test_every_verdict_names_its_policy(kind: str, plan: str | None, name: str) -> None:
    res = Result(rules.STARTED, 3, 4, EXPIRES, NOW, ["s-old"], kind)
    verdicts = build(ev(plan=plan), res)
    assert [v["policy"] for v in verdicts] == [name, name]  # the revoke too
    assert [v["maxStreams"] for v in verdicts] == [4, 4]  # the policy's limit


def test_a_result_without_a_policy_kind_is_the_default() -> None:
    [verdict] = build(ev(plan="gold"), result(rules.STARTED))
    assert verdict["policy"] == "default"


@pytest.mark.parametrize("code", sorted(rules.ADVISED))
def test_an_advice_deny_lists_its_conflicts_in_order_and_the_earliest_expiry(code: int) -> None:
    [verdict] = build(ev(), deny(code))
    assert verdict["decision"] == "deny"
    assert verdict["conflicts"] == [
        {"sessionId": "s-tv", "deviceId": "tv-livingroom", "deviceClass": "tv", "contentId": "c-1",
         "startedAt": NOW - 60_000, "leaseExpiresAt": NOW + 50_000},
        {"sessionId": "s-ph", "deviceId": None, "deviceClass": "mobile", "contentId": None,
         "startedAt": NOW - 30_000, "leaseExpiresAt": NOW + 20_000},
        {"sessionId": "s-old", "deviceId": None, "deviceClass": None, "contentId": None,
         "startedAt": None, "leaseExpiresAt": NOW + 70_000},
    ]  # fmt: skip
    assert verdict["nextFreeAt"] == NOW + 20_000  # the earliest expiry, not the first conflict's
    assert (verdict["leaseExpiresAt"], verdict["token"]) == (None, None)
    Verdict.model_validate(verdict)


@pytest.mark.parametrize("conflicts", [[], None], ids=["no-conflicts", "stored-before-advice"])
def test_an_advice_deny_with_nothing_blocking_has_empty_conflicts_and_no_next_free_time(
    conflicts: list | None,
) -> None:
    [verdict] = build(ev(), deny(rules.LIMIT_EXCEEDED, conflicts))  # e.g. maxStreams 0, no lease
    assert (verdict["conflicts"], verdict["nextFreeAt"]) == ([], None)


@pytest.mark.parametrize(("kind", "code"), [(k, c) for k, c, *_ in RULE_TABLE if c not in rules.ADVISED])
def test_other_verdicts_carry_no_advice_even_if_the_result_had_some(kind: str, code: int) -> None:
    res = Result(code, 1, 3, EXPIRES, NOW, [], "d", CONFLICTS)
    [verdict] = build(ev(kind), res)
    assert not ADVICE_KEYS & set(verdict)


def test_a_redelivered_deny_carries_the_same_advice_byte_for_byte() -> None:
    first = build_verdicts(ev(plan="gold"), deny(policy="p"), TOPIC, 0, 10, SIGNER)
    again = build_verdicts(ev(plan="gold"), deny(policy="p"), TOPIC, 4, 800, HS256Signer(SECRET.encode()))
    assert first == again


def test_terminate_of_an_active_target_yields_its_verdict_then_a_terminated_revoke() -> None:
    res = Result(rules.TERMINATED, 1, 3, 0, NOW, ["s-tv"], "u")
    own, revoke = build(ev("terminate", session="s-phone", target="s-tv"), res)
    assert (own["sessionId"], own["type"], own["decision"], own["reason"]) == (
        "s-phone", "terminate", "allow", "terminated",
    )  # fmt: skip
    assert (own["leaseExpiresAt"], own["token"], own["activeStreams"]) == (None, None, 1)
    assert (revoke["sessionId"], revoke["type"], revoke["decision"], revoke["reason"]) == (
        "s-tv", "terminate", "revoke", "terminated",
    )  # fmt: skip
    assert (revoke["eventId"], revoke["leaseExpiresAt"], revoke["token"], revoke["policy"]) == (
        own["eventId"], None, None, "user:u-42",
    )  # fmt: skip
    assert set(own) == set(revoke) == CONTRACT_KEYS
    assert own["verdictId"] != revoke["verdictId"]
    for verdict in (own, revoke):
        Verdict.model_validate(verdict)


def test_the_terminate_revoke_id_is_derived_from_the_event_identity_and_the_target() -> None:
    res = Result(rules.TERMINATED, 0, 3, 0, NOW, ["s-tv"])
    first = build(ev("terminate", target="s-tv"), res, partition=0, offset=1)[1]
    again = build(ev("terminate", target="s-tv"), res, partition=7, offset=90)[1]
    other_event = build(ev("terminate", target="s-tv", event_id="e-2"), res)[1]
    other_target = build(ev("terminate", target="s-ph"), Result(rules.TERMINATED, 0, 3, 0, NOW, ["s-ph"]))[1]
    assert first["verdictId"] == again["verdictId"]
    assert len({first["verdictId"], other_event["verdictId"], other_target["verdictId"]}) == 3


def test_terminate_of_an_unknown_target_is_one_not_active_verdict() -> None:
    [verdict] = build(ev("terminate", target="nope"), Result(rules.NOT_ACTIVE, 2, 3, 0, NOW, []))
    assert (verdict["decision"], verdict["reason"], verdict["sessionId"]) == ("allow", "not_active", "s-1")


def test_revokes_of_a_start_stay_evicted() -> None:
    res = Result(rules.STARTED, 3, 3, EXPIRES, NOW, ["s-a", "s-b"], "p")
    _own, *revokes = build(ev(plan="gold", device_class="tv"), res)
    assert [(r["sessionId"], r["reason"], r["policy"]) for r in revokes] == [
        ("s-a", "evicted", "plan:gold"),
        ("s-b", "evicted", "plan:gold"),
    ]


# -- issuedBy: the support console's terminate (contract: "The support console") -------------


def test_a_terminate_with_an_issuer_names_it_on_its_verdict_and_its_revoke_and_without_one_neither() -> None:
    event = ev("terminate", target="s-tv")
    res = [rules.TERMINATED, 1, 3, EXPIRES, NOW, ["s-tv"]]
    issued = [
        orjson.loads(v) for v in build_verdicts(event, res, TOPIC, 0, 10, SIGNER, issued_by="support:agent-7")
    ]
    assert [(v["decision"], v["issuedBy"]) for v in issued] == [
        ("allow", "support:agent-7"),
        ("revoke", "support:agent-7"),
    ]
    plain = build(event, res)
    assert all("issuedBy" not in v for v in plain)
    # Everything else is the same verdict: the field is added, nothing changes.
    assert [{k: v for k, v in x.items() if k != "issuedBy"} for x in issued] == plain
    assert all(Verdict.model_validate(v).issuedBy == "support:agent-7" for v in issued)


def test_the_issued_by_header_is_read_from_the_record_headers_and_a_bad_one_is_refused() -> None:
    from processor.wire import issued_by

    assert issued_by(None) is None
    assert issued_by([("reply.topic", b"r")]) is None
    assert issued_by([("issued-by", b"support:a"), ("issued-by", "support:ü".encode())]) == "support:ü"
    for bad in (b"", b"\xff\xfe", b"support:a\nb", b"x" * 513):
        with pytest.raises(ValueError, match="issued-by"):
            issued_by([("issued-by", bad)])
