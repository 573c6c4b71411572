"""REDIS_CLUSTER as a user meets it: the right client for the right Redis, a clear refusal for
the wrong one, single-slot keys, and the safety checks on every master of the cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis as sync_redis
from redis.crc import key_slot

from compose.cluster_slots import masters_of, partition_slots, spread
from compose.launcher import RedisCluster
from processor.config import load_settings
from processor.lease_store import LeaseStore, Rules
from processor.redis_checks import (
    RedisModeError,
    UnsafeRedisError,
    check_redis_mode,
    check_redis_safe,
    warn_uneven_partitions,
)
from processor.redis_client import HiredisPackingConnection, connect
from tests.harness import TEST_SECRET

REPO = Path(__file__).resolve().parents[2]
RULES = Rules(3, 90_000, "reject", 16, 3_600_000)


@pytest.fixture
def cluster_url(redis_cluster: RedisCluster | None) -> str:
    return os.environ["TEST_REDIS_CLUSTER_URL"] if redis_cluster is None else redis_cluster.url


async def test_a_cluster_node_without_redis_cluster_true_is_refused_with_what_to_set(cluster_url: str):
    client = connect(cluster_url)
    try:
        with pytest.raises(RedisModeError, match="set REDIS_CLUSTER=true"):
            await check_redis_mode(client, cluster=False)
    finally:
        await client.aclose()


async def test_redis_cluster_true_on_a_single_redis_is_refused_with_what_to_set(redis_url: str):
    client = connect(redis_url, cluster=True)
    try:
        with pytest.raises(RedisModeError, match="set REDIS_CLUSTER=false"):
            await check_redis_mode(client, cluster=True)
    finally:
        await client.aclose()


async def test_the_cluster_client_packs_commands_with_hiredis_on_every_node(cluster_url: str):
    client = connect(cluster_url, cluster=True)
    try:
        await check_redis_mode(client, cluster=True)
        nodes = client.get_nodes()
        assert len(nodes) >= 3  # the masters (replicas too once CLUSTER SLOTS lists them)
        assert {node.connection_class for node in nodes} == {HiredisPackingConnection}
    finally:
        await client.aclose()


def test_every_key_of_one_partition_shares_one_hash_slot():
    store = LeaseStore(connect("redis://127.0.0.1:1/0"), "playback.events", RULES)  # keys only: no I/O
    for partition in (0, 7, 11):
        keys = [
            store.partition_key(partition),
            store.user_key(partition, "u-1"),
            store.user_key(partition, "someone{else}"),
            store.expiry_index_key(partition),
        ]
        assert len({key_slot(k.encode()) for k in keys}) == 1, keys
    assert len({key_slot(store.partition_key(p).encode()) for p in range(12)}) > 1  # spread over slots


async def test_an_evicting_policy_on_one_master_of_the_cluster_is_refused(
    redis_cluster: RedisCluster | None, cluster_url: str
):
    if redis_cluster is None:
        pytest.skip("changes a master's config: only on the session's own cluster")
    client = connect(cluster_url, cluster=True)
    master = redis_cluster.master_ports()[-1]
    settings = load_settings(redis_url=cluster_url, redis_cluster=True, jwt_secret=TEST_SECRET)
    try:
        await check_redis_safe(client, settings)  # noeviction everywhere: fine
        redis_cluster._ask(master, "CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
        with pytest.raises(UnsafeRedisError, match="allkeys-lru"):
            await check_redis_safe(client, settings)
    finally:
        redis_cluster._ask(master, "CONFIG", "SET", "maxmemory-policy", "noeviction")
        await client.aclose()


def test_the_leases_command_lists_from_the_cluster_and_refuses_a_mismatch(cluster_url: str, tmp_path: Path):
    env = {
        **os.environ,
        "REDIS_URL": cluster_url,
        "EVENTS_TOPIC": "ops-cluster",
        "REDIS_CLUSTER": "true",
        "PYTHONPATH": str(REPO),
    }
    ok = subprocess.run(
        [sys.executable, "-m", "processor", "leases", "u-nobody"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert '"leases": {}' in ok.stdout
    wrong = subprocess.run(
        [sys.executable, "-m", "processor", "leases", "u-nobody"], cwd=tmp_path,
        env={**env, "REDIS_CLUSTER": "false"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert wrong.returncode == 2
    assert "set REDIS_CLUSTER=true" in wrong.stderr and "Traceback" not in wrong.stderr


async def test_the_processor_warns_when_the_partitions_sit_unevenly_on_the_masters(cluster_url: str, caplog):
    """Checked against the cluster's own slot map: a warning exactly when one master holds
    more than one partition more than another (with the command that evens them out)."""
    host, port = cluster_url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    with sync_redis.Redis(host=host, port=int(port)) as r:
        masters = masters_of(r)

    def uneven(topic: str) -> bool:
        counts = [len(p) for p in spread(masters, partition_slots(topic, 3)).values()]
        return max(counts) - min(counts) > 1

    names = [f"spread-{i}" for i in range(200)]
    cases = [next(t for t in names if uneven(t)), next(t for t in names if not uneven(t))]
    client = connect(cluster_url, cluster=True)
    try:
        for topic in cases:
            caplog.clear()
            with caplog.at_level("INFO", logger="processor"):
                await warn_uneven_partitions(client, topic, 3)
            warned = [r for r in caplog.records if r.levelname == "WARNING" and "unevenly" in r.getMessage()]
            assert bool(warned) == uneven(topic), (topic, caplog.records)
            if warned:
                assert "compose.launcher balance" in warned[0].getMessage()
    finally:
        await client.aclose()
