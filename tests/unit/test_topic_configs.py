"""Topics created at replication 3 or more carry min.insync.replicas = factor - 1 (contract)."""

from __future__ import annotations

from processor.topics import COMPACTED, EVENTS_TOPIC_CONFIGS, replicated_configs


def test_replication_of_three_or_more_sets_min_insync_replicas_to_factor_minus_one():
    assert replicated_configs(3) == {"min.insync.replicas": "2"}
    assert replicated_configs(5, COMPACTED) == {"cleanup.policy": "compact", "min.insync.replicas": "4"}
    assert replicated_configs(3, EVENTS_TOPIC_CONFIGS)["min.insync.replicas"] == "2"


def test_below_three_replicas_the_brokers_default_stays():
    assert replicated_configs(1) == {}
    assert replicated_configs(2, EVENTS_TOPIC_CONFIGS) == EVENTS_TOPIC_CONFIGS


def test_the_callers_configs_are_not_changed():
    configs = dict(EVENTS_TOPIC_CONFIGS)
    replicated_configs(3, configs)
    assert configs == EVENTS_TOPIC_CONFIGS
