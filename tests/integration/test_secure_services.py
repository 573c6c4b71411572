"""The secured local services (compose/secure_services.py) do what issue 26's tests rely on:
SASL_SSL with three mechanisms, the authorizer on, the contract's ACL sets sufficient and no more,
bad credentials and bad trust refused, mutual TLS, and a TLS-only Redis with least-privilege users.
"""

from __future__ import annotations

import ssl
import uuid

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.conn import create_conn
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
)
from aiokafka.helpers import create_ssl_context
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import AuthenticationError, NoPermissionError
from redis.exceptions import ConnectionError as RedisConnectionError

from compose.kafka_acls import AclBinding, processor_acls
from compose.redis_cluster_secure import SecureRedisCluster
from compose.secure_services import nowrite_acls
from tests.secure_services import SecureEnv


def _host_port(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
async def test_admin_creates_a_topic_over_each_sasl_mechanism(
    secure_services: SecureEnv, mechanism: str
) -> None:
    name = f"sec-admin-{uuid.uuid4().hex[:10]}"
    await secure_services.admin.create_topics([name], partitions=2)
    producer = AIOKafkaProducer(**secure_services.aiokafka_args("admin", mechanism))
    await producer.start()
    try:
        sent = await producer.send_and_wait(name, b"v", key=b"k")
        assert sent.topic == name
    finally:
        await producer.stop()


async def test_processor_acls_let_it_produce_and_consume_its_topics_and_nothing_else(
    secure_services: SecureEnv,
) -> None:
    topics = await secure_services.admin.contract_topics(partitions=1)
    (other,) = await secure_services.admin.create_topics([f"sec-other-{uuid.uuid4().hex[:10]}"])
    await secure_services.admin.grant(processor_acls(topics=topics))
    args = secure_services.aiokafka_args("processor")
    admin_producer = AIOKafkaProducer(**secure_services.aiokafka_args("admin"))
    # idempotent like the processor's producer: the contract's set must be enough for it
    producer = AIOKafkaProducer(enable_idempotence=True, **args)
    consumer = AIOKafkaConsumer(
        topics.events,
        group_id=topics.processor_group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **secure_services.aiokafka_args("processor"),
    )
    await admin_producer.start()
    await producer.start()
    try:
        await admin_producer.send_and_wait(topics.events, b"event", key=b"u-1")
        for topic in (topics.verdicts, topics.dlq, topics.replies):
            assert (await producer.send_and_wait(topic, b"out", key=b"u-1")).topic == topic
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait(other, b"nope")
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait(topics.events, b"not the processor's to write")
        await consumer.start()
        records = await consumer.getmany(timeout_ms=20000)
        assert [r.value for batch in records.values() for r in batch] == [b"event"]
        await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()
        await admin_producer.stop()


async def test_a_consumer_group_without_its_acl_is_refused(secure_services: SecureEnv) -> None:
    topics = await secure_services.admin.contract_topics(partitions=1)
    await secure_services.admin.grant(processor_acls(topics=topics))
    consumer = AIOKafkaConsumer(
        topics.events,
        group_id=f"{topics.processor_group}-not-granted",
        **secure_services.aiokafka_args("processor"),
    )
    try:
        with pytest.raises(GroupAuthorizationFailedError):
            await consumer.start()
            await consumer.getmany(timeout_ms=20000)
    finally:
        await consumer.stop()


async def test_processor_nowrite_is_refused_write_on_verdicts_only(secure_services: SecureEnv) -> None:
    topics = await secure_services.admin.contract_topics(partitions=1)
    acls = nowrite_acls(topics)
    assert AclBinding("User:processor-nowrite", "TOPIC", topics.verdicts, "DESCRIBE") in acls
    await secure_services.admin.grant(acls)
    producer = AIOKafkaProducer(**secure_services.aiokafka_args("processor-nowrite"))
    await producer.start()
    try:
        assert (await producer.send_and_wait(topics.dlq, b"ok")).topic == topics.dlq
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait(topics.verdicts, b"refused")
    finally:
        await producer.stop()


async def test_a_revoked_acl_applies_before_revoke_returns(secure_services: SecureEnv) -> None:
    topics = await secure_services.admin.contract_topics(partitions=1)
    write = AclBinding("User:gateway", "TOPIC", topics.events, "WRITE")
    await secure_services.admin.grant([write, AclBinding("User:gateway", "TOPIC", topics.events, "DESCRIBE")])
    producer = AIOKafkaProducer(**secure_services.aiokafka_args("gateway"))
    await producer.start()
    try:
        await producer.send_and_wait(topics.events, b"granted", key=b"u")
        await secure_services.admin.revoke([write])
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait(topics.events, b"revoked", key=b"u")
    finally:
        await producer.stop()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
async def test_a_wrong_password_fails_the_sasl_handshake(secure_services: SecureEnv, mechanism: str) -> None:
    host, port = _host_port(secure_services.bootstrap)
    with pytest.raises(SaslAuthenticationFailed):
        conn = await create_conn(
            host,
            port,
            security_protocol="SASL_SSL",
            sasl_mechanism=mechanism,
            sasl_plain_username="processor",
            sasl_plain_password="wrong-" + secure_services.kafka_password("processor"),
            ssl_context=create_ssl_context(cafile=str(secure_services.ca_file)),
        )
        conn.close()


@pytest.mark.parametrize("case", ["untrusted CA", "hostname mismatch"])
async def test_a_certificate_the_client_cannot_trust_is_refused(
    secure_services: SecureEnv, case: str
) -> None:
    untrusted = case == "untrusted CA"
    address = secure_services.bootstrap if untrusted else secure_services.mismatch_bootstrap
    cafile = secure_services.untrusted_ca_file if untrusted else secure_services.ca_file
    with pytest.raises(ssl.SSLCertVerificationError) as refused:
        conn = await create_conn(
            *_host_port(address),
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_plain_username="processor",
            sasl_plain_password=secure_services.kafka_password("processor"),
            ssl_context=create_ssl_context(cafile=str(cafile)),
        )
        conn.close()
    assert ("mismatch" in str(refused.value)) is not untrusted


async def test_the_mtls_listener_takes_the_certificate_cn_as_principal_and_needs_a_certificate(
    secure_services: SecureEnv,
) -> None:
    topics = await secure_services.admin.contract_topics(partitions=1)
    await secure_services.admin.grant(processor_acls(topics=topics))
    with_cert = create_ssl_context(
        cafile=str(secure_services.ca_file),
        certfile=str(secure_services.client_cert_file),
        keyfile=str(secure_services.client_key_file),
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=secure_services.mtls_bootstrap, security_protocol="SSL", ssl_context=with_cert
    )
    await producer.start()
    try:  # CN=processor holds the processor's ACLs: Write on verdicts, not on events
        assert (await producer.send_and_wait(topics.verdicts, b"v")).topic == topics.verdicts
        with pytest.raises(TopicAuthorizationFailedError):
            await producer.send_and_wait(topics.events, b"e")
    finally:
        await producer.stop()
    no_cert = AIOKafkaProducer(
        bootstrap_servers=secure_services.mtls_bootstrap,
        security_protocol="SSL",
        ssl_context=create_ssl_context(cafile=str(secure_services.ca_file)),
    )
    try:
        with pytest.raises(KafkaConnectionError):
            await no_cert.start()
    finally:
        await no_cert.stop()


async def test_kafka_speaks_no_plaintext(secure_services: SecureEnv) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=secure_services.bootstrap, request_timeout_ms=10000)
    try:
        with pytest.raises(KafkaConnectionError):
            await producer.start()
    finally:
        await producer.stop()


def _redis(secure_services: SecureEnv, user: str, **kwargs) -> aioredis.Redis:
    return aioredis.from_url(
        secure_services.redis_urls[user],
        password=secure_services.redis_password(user),
        ssl_ca_certs=str(secure_services.ca_file),
        **kwargs,
    )


async def test_redis_processor_user_has_its_commands_on_its_keys_only(secure_services: SecureEnv) -> None:
    key = f"sc:test:{uuid.uuid4().hex}"
    r = _redis(secure_services, "processor")
    try:
        sha = await r.script_load("return redis.call('SET', KEYS[1], ARGV[1])")
        await r.evalsha(sha, 1, key, "v")
        assert await r.get(key) == b"v"
        await r.hset(f"{key}:h", "f", 1)
        assert await r.hincrby(f"{key}:h", "f", 1) == 2
        with pytest.raises(NoPermissionError):
            await r.set(f"other:{key}", "v")  # not its key prefix
        refused = (r.info, lambda: r.config_get("requirepass"), lambda: r.keys("*"), r.flushall)
        for call in refused:
            with pytest.raises(NoPermissionError):
                await call()
    finally:
        await r.aclose()


async def test_redis_gateway_user_reads_and_cannot_write(secure_services: SecureEnv) -> None:
    key = f"sc:test:{uuid.uuid4().hex}"
    writer = _redis(secure_services, "processor")
    gateway = _redis(secure_services, "gateway")
    try:
        await writer.set(key, "v")
        assert await gateway.get(key) == b"v"
        writes = (
            lambda: gateway.set(key, "w"),
            lambda: gateway.delete(key),
            lambda: gateway.hset(key, "f", 1),
        )
        for call in writes:
            with pytest.raises(NoPermissionError):
                await call()
        assert await writer.get(key) == b"v"
    finally:
        await writer.aclose()
        await gateway.aclose()


async def test_redis_refuses_the_default_user_a_wrong_password_and_plain_tcp(
    secure_services: SecureEnv,
) -> None:
    anonymous = aioredis.from_url(secure_services.redis_url, ssl_ca_certs=str(secure_services.ca_file))
    wrong = _redis(secure_services, "processor")
    wrong.connection_pool.connection_kwargs["password"] = "wrong"
    plain = aioredis.from_url(
        secure_services.redis_url.replace("rediss://", "redis://"), socket_timeout=5, socket_connect_timeout=5
    )
    try:
        with pytest.raises(AuthenticationError):  # "default" is off: NOAUTH on the first command
            await anonymous.get("sc:x")
        with pytest.raises(AuthenticationError):
            await wrong.ping()
        with pytest.raises(RedisConnectionError):  # no plain port: the TLS port drops a plain client
            await plain.ping()
    finally:
        for client in (anonymous, wrong, plain):
            await client.aclose()


async def test_tls_redis_cluster_gives_each_user_its_rights_on_every_node(
    secure_services: SecureEnv, secure_redis_cluster: SecureRedisCluster
) -> None:
    def cluster_client(user: str) -> RedisCluster:
        return RedisCluster.from_url(
            secure_redis_cluster.url_for(user),
            password=secure_services.redis_password(user),
            ssl_ca_certs=str(secure_services.ca_file),
        )

    processor, gateway = cluster_client("processor"), cluster_client("gateway")
    tag = uuid.uuid4().hex[:8]
    keys = [f"sc:{{{tag}-{i}}}:k" for i in range(12)]
    assert len({key_slot(k.encode()) for k in keys}) == len(keys)  # 12 slots: spread over the masters
    try:
        sha = await processor.script_load("return redis.call('SET', KEYS[1], ARGV[1])")
        for key in keys:
            await processor.evalsha(sha, 1, key, "v")
        assert [await gateway.get(k) for k in keys] == [b"v"] * len(keys)
        with pytest.raises(NoPermissionError):
            await gateway.set(keys[0], "w")
        with pytest.raises(NoPermissionError):
            await processor.set(f"other:{tag}", "v")
    finally:
        await processor.aclose()
        await gateway.aclose()


async def test_a_user_made_at_run_time_authenticates_and_a_rotated_password_replaces_the_old(
    secure_services: SecureEnv,
) -> None:
    user = await secure_services.admin.add_user("rotating")
    host, port = _host_port(secure_services.bootstrap)

    async def handshake(password: str) -> None:
        conn = await create_conn(
            host,
            port,
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-256",
            sasl_plain_username=user,
            sasl_plain_password=password,
            ssl_context=create_ssl_context(cafile=str(secure_services.ca_file)),
        )
        conn.close()

    old = secure_services.kafka_password(user)
    await handshake(old)
    await secure_services.admin.rotate_password(user)
    new = secure_services.kafka_password(user)
    assert new != old
    await handshake(new)
    with pytest.raises(SaslAuthenticationFailed):
        await handshake(old)


async def test_no_password_shows_in_the_services_logs_or_printed_settings(secure_services: SecureEnv) -> None:
    services = secure_services.services
    assert services.broker is not None and services.redis is not None
    passwords = [p.read_text() for p in (services.folder / "secrets").glob("*.password")]
    assert len(passwords) >= 7
    logs = [services.broker.log_file, services.broker.output_log, services.redis.output_log]
    shown = "".join(path.read_text(errors="replace") for path in logs if path.exists())
    shown += repr(secure_services.env("processor")) + repr(secure_services.env("gateway"))
    shown += repr(services.describe())
    assert "SASL_SSL" in shown  # the broker's log is read, not an empty file
    assert not [p for p in passwords if p in shown]
