"""processor.policies: parsing policy records, resolving an event's policy, tombstones, bad records."""

from __future__ import annotations

import logging

import orjson
import pytest

from processor.metrics import Metrics
from processor.policies import Policy, PolicyError, PolicyTable, parse_policy, policy_kind

SETTINGS_MAX, SETTINGS_OVERFLOW = 3, "reject"


def table(metrics: Metrics | None = None, overflow: str = SETTINGS_OVERFLOW) -> PolicyTable:
    return PolicyTable(SETTINGS_MAX, overflow, metrics)


def put(t: PolicyTable, key: str, value: dict | bytes | None, where: str = "") -> bool:
    raw = orjson.dumps(value) if isinstance(value, dict) else value
    return t.apply(key.encode(), raw, where)


def errors(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("concurrency_policy_errors_total")


# -- parse ------------------------------------------------------------------------------


def test_a_full_policy_value_parses_into_its_limit_overflow_and_class_caps():
    raw = orjson.dumps({"maxStreams": 4, "overflow": "evict_oldest", "deviceClasses": {"tv": 2, "mobile": 3}})
    assert parse_policy("plan:gold", raw, "reject") == Policy("p", 4, True, {"tv": 2, "mobile": 3})


def test_a_policy_without_overflow_takes_the_overflow_setting():
    raw = orjson.dumps({"maxStreams": 2})
    assert parse_policy("default", raw, "reject") == Policy("d", 2, False, {})
    assert parse_policy("default", raw, "evict_oldest") == Policy("d", 2, True, {})


def test_the_key_names_the_kind_of_policy():
    assert [policy_kind(k) for k in ("default", "plan:basic", "user:u-42", "user:a:b")] == [
        "d",
        "p",
        "u",
        "u",
    ]


@pytest.mark.parametrize("key", ["", "Default", "gold", "plan:", "user:", "plan", "users:u1", " default"])
def test_a_key_that_is_not_default_plan_or_user_is_refused(key: str):
    with pytest.raises(PolicyError):
        policy_kind(key)


def test_unknown_fields_of_a_policy_are_ignored():
    raw = orjson.dumps({"maxStreams": 2, "comment": "from the billing team", "future": {"x": [1]}})
    assert parse_policy("plan:basic", raw, "reject") == Policy("p", 2, False, {})


@pytest.mark.parametrize("limit", [0, 1, 1000])
def test_max_streams_from_0_to_1000_is_accepted(limit: int):
    assert parse_policy("default", orjson.dumps({"maxStreams": limit}), "reject").max_streams == limit


@pytest.mark.parametrize("cap", [0, 1, 1000])
def test_a_class_cap_from_0_to_1000_is_accepted(cap: int):
    raw = orjson.dumps({"maxStreams": 5, "deviceClasses": {"tv": cap}})
    assert parse_policy("default", raw, "reject").classes == {"tv": cap}


@pytest.mark.parametrize("name", ["t", "c" * 32])
def test_class_names_of_1_to_32_characters_are_accepted(name: str):
    raw = orjson.dumps({"maxStreams": 5, "deviceClasses": {name: 1}})
    assert parse_policy("default", raw, "reject").classes == {name: 1}


MALFORMED: dict[str, bytes] = {
    "not_json": b"{maxStreams: 2",
    "json_null": b"null",
    "not_an_object": b"[2]",
    "no_max_streams": orjson.dumps({"overflow": "reject"}),
    "max_streams_negative": orjson.dumps({"maxStreams": -1}),
    "max_streams_over_1000": orjson.dumps({"maxStreams": 1001}),
    "max_streams_a_string": orjson.dumps({"maxStreams": "2"}),
    "max_streams_a_float": orjson.dumps({"maxStreams": 2.5}),
    "max_streams_a_bool": orjson.dumps({"maxStreams": True}),
    "max_streams_null": orjson.dumps({"maxStreams": None}),
    "unknown_overflow": orjson.dumps({"maxStreams": 2, "overflow": "drop_newest"}),
    "classes_not_an_object": orjson.dumps({"maxStreams": 2, "deviceClasses": ["tv"]}),
    "class_cap_negative": orjson.dumps({"maxStreams": 2, "deviceClasses": {"tv": -1}}),
    "class_cap_over_1000": orjson.dumps({"maxStreams": 2, "deviceClasses": {"tv": 1001}}),
    "class_cap_a_string": orjson.dumps({"maxStreams": 2, "deviceClasses": {"tv": "1"}}),
    "class_name_empty": orjson.dumps({"maxStreams": 2, "deviceClasses": {"": 1}}),
    "class_name_over_32": orjson.dumps({"maxStreams": 2, "deviceClasses": {"c" * 33: 1}}),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_policy_value_is_refused(case: str):
    with pytest.raises(PolicyError):
        parse_policy("plan:basic", MALFORMED[case], "reject")


# -- resolution order -------------------------------------------------------------------


def test_without_any_policy_the_settings_apply_and_are_reported_as_default():
    t = table()
    p = t.resolve("u1", "basic")
    assert p == Policy("d", SETTINGS_MAX, False, {})
    assert p.name("u1", "basic") == "default"


def test_resolution_order_is_user_then_plan_then_default_then_settings():
    t = table()
    assert put(t, "default", {"maxStreams": 5})
    assert put(t, "plan:basic", {"maxStreams": 1})
    assert put(t, "user:vip", {"maxStreams": 9})
    assert t.resolve("vip", "basic") == Policy("u", 9, False, {})  # the user override beats the plan
    assert t.resolve("u1", "basic") == Policy("p", 1, False, {})
    assert t.resolve("u1", None) == Policy("d", 5, False, {})  # no plan named: the default record
    assert t.resolve("u1", "premium") == Policy("d", 5, False, {})  # a plan without a policy
    assert t.resolve("vip", None) == Policy("u", 9, False, {})


def test_the_policy_names_the_user_the_plan_or_default():
    t = table()
    put(t, "plan:basic", {"maxStreams": 1})
    put(t, "user:vip", {"maxStreams": 9})
    assert t.resolve("vip", "basic").name("vip", "basic") == "user:vip"
    assert t.resolve("u1", "basic").name("u1", "basic") == "plan:basic"
    assert t.resolve("u1", "gold").name("u1", "gold") == "default"


def test_a_user_policy_applies_to_that_user_only():
    t = table()
    put(t, "user:u1", {"maxStreams": 7})
    assert t.resolve("u1", None).max_streams == 7
    assert t.resolve("u10", None).max_streams == SETTINGS_MAX
    assert t.resolve("u", None).max_streams == SETTINGS_MAX


def test_a_later_record_of_a_key_replaces_the_earlier_one():
    t = table()
    put(t, "plan:basic", {"maxStreams": 1, "deviceClasses": {"tv": 1}})
    put(t, "plan:basic", {"maxStreams": 2, "overflow": "evict_oldest"})
    assert t.resolve("u1", "basic") == Policy("p", 2, True, {})


# -- tombstones -------------------------------------------------------------------------


def test_a_tombstone_of_a_plan_falls_back_to_the_default_record_then_the_settings():
    t = table()
    put(t, "default", {"maxStreams": 5})
    put(t, "plan:basic", {"maxStreams": 1})
    assert put(t, "plan:basic", None)
    assert t.resolve("u1", "basic") == Policy("d", 5, False, {})
    assert put(t, "default", None)
    assert t.resolve("u1", "basic") == Policy("d", SETTINGS_MAX, False, {})


def test_a_tombstone_of_a_user_falls_back_to_the_plan():
    t = table()
    put(t, "plan:basic", {"maxStreams": 1})
    put(t, "user:u1", {"maxStreams": 8})
    put(t, "user:u1", None)
    assert t.resolve("u1", "basic") == Policy("p", 1, False, {})


def test_a_tombstone_of_an_unknown_key_is_harmless():
    metrics = Metrics()
    t = table(metrics)
    assert put(t, "plan:never-set", None)
    assert len(t) == 0 and errors(metrics) == 0


def test_a_policy_set_again_after_its_tombstone_applies():
    t = table()
    put(t, "plan:basic", {"maxStreams": 1})
    put(t, "plan:basic", None)
    put(t, "plan:basic", {"maxStreams": 2})
    assert t.resolve("u1", "basic") == Policy("p", 2, False, {})


# -- malformed records keep the last good value ----------------------------------------


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_record_keeps_the_last_good_value_of_its_key_and_is_counted(case: str):
    metrics = Metrics()
    t = table(metrics)
    put(t, "plan:basic", {"maxStreams": 1, "deviceClasses": {"tv": 1}})
    assert put(t, "plan:basic", MALFORMED[case], "policies/0@7") is False
    assert t.resolve("u1", "basic") == Policy("p", 1, False, {"tv": 1})
    assert errors(metrics) == 1


def test_a_malformed_record_of_a_key_never_set_leaves_it_unset():
    metrics = Metrics()
    t = table(metrics)
    assert put(t, "default", b"{oops") is False
    assert t.resolve("u1", None) == Policy("d", SETTINGS_MAX, False, {})
    assert len(t) == 0


@pytest.mark.parametrize("key", [None, b"gold", b"plan:", b"\xff\xfe"])
def test_a_record_with_a_bad_key_is_ignored_and_counted(key: bytes | None):
    metrics = Metrics()
    t = table(metrics)
    assert t.apply(key, orjson.dumps({"maxStreams": 1}), "policies/0@3") is False
    assert len(t) == 0 and errors(metrics) == 1
    assert t.apply(key, None, "policies/0@4") is False  # a tombstone under a bad key: as bad
    assert errors(metrics) == 2


def test_a_malformed_record_is_logged_with_its_key_and_where_it_is(caplog: pytest.LogCaptureFixture):
    t = table(Metrics())
    with caplog.at_level(logging.ERROR, logger="processor"):
        put(t, "plan:basic", b'{"maxStreams": "lots"}', "playback.policies/0@41")
    [record] = [r for r in caplog.records if r.name == "processor"]
    assert record.levelno == logging.ERROR
    assert record.key == "plan:basic"
    assert "41" in record.at and "playback.policies" in record.at
    assert "maxStreams" in record.error


def test_good_records_after_a_malformed_one_still_apply():
    metrics = Metrics()
    t = table(metrics)
    put(t, "plan:basic", b"not json")
    put(t, "plan:basic", {"maxStreams": 2})
    put(t, "user:u1", {"maxStreams": 4})
    assert t.resolve("u1", None).max_streams == 4 and t.resolve("u2", "basic").max_streams == 2
    assert errors(metrics) == 1


def test_a_table_without_metrics_still_ignores_malformed_records():
    t = table()
    assert put(t, "default", b"[]") is False
    assert len(t) == 0


# -- listing ----------------------------------------------------------------------------


def test_the_listing_shows_every_policy_in_force_with_its_effective_overflow():
    t = table(overflow="evict_oldest")
    put(t, "user:u1", {"maxStreams": 9})
    put(t, "plan:basic", {"maxStreams": 1, "overflow": "reject", "deviceClasses": {"tv": 1}})
    put(t, "default", {"maxStreams": 5})
    put(t, "plan:gone", {"maxStreams": 2})
    put(t, "plan:gone", None)
    assert t.listing() == {
        "default": {"maxStreams": 5, "overflow": "evict_oldest"},
        "plan:basic": {"maxStreams": 1, "overflow": "reject", "deviceClasses": {"tv": 1}},
        "user:u1": {"maxStreams": 9, "overflow": "evict_oldest"},
    }
    assert len(t) == 3
