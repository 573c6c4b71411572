"""The processor, its commands and the gateway over the secured broker and Redis (contract: Secured
Kafka and Redis), with exactly the contract's ACLs, as real processes.

1. Each bad credential or trust (Kafka and Redis), a missing Write ACL and a missing topic end the
   start with exit code 2 and one line on stderr that says which, within 30 s, no traceback, no
   secret.
2. The acceptance flow: the simulator (an admin) against the processor (User:processor, Redis user
   processor), then the gateway's calls (User:gateway, Redis user gateway), the verifier clean;
   Write on the verdicts topic, then Read on the events topic, revoked while running: the
   processor holds (none of the held events decided or committed, /health and the log say which ACL) and the
   grant back lets it go on with nothing lost or doubled. No password in any output, /health or
   /metrics.
3. The shared client factory over SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN, and mutual TLS.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka import TopicPartition

from compose.kafka_acls import AclBinding, Topics, gateway_acls, processor_acls
from compose.managed import free_port
from compose.redis_cluster_secure import SecureRedisCluster
from compose.secure_services import nowrite_acls
from processor.connections import KafkaAccess, RedisAccess
from processor.kafka_checks import KafkaAccessError, check_kafka_login
from producer_sim.kafka_io import committed_offsets, read_topic
from producer_sim.processor_proc import ProcessorProcess
from producer_sim.runner import Simulation
from producer_sim.settings import SimSettings
from producer_sim.sim_config import SimConfig
from producer_sim.verifier import verify
from tests.gateway_harness import GATEWAY_TEST_SECRET, bearer
from tests.harness import wait_until
from tests.secure_services import SecureEnv

PARTITIONS = 2
JWT_SECRET = "secured-test-jwt-secret-0123456789abcdef"
REPO = Path(__file__).resolve().parents[2]
START_BOUND_S = 30.0  # the contract: a refusal ends the start within 30 s


def topic_env(topics: Topics) -> dict[str, str]:
    """The fixture's names for `topics`, with this module's partition count and token secret."""
    return {**SecureEnv.topic_env(topics), "TOPIC_PARTITIONS": str(PARTITIONS), "JWT_SECRET": JWT_SECRET}


def processor_env(sec: SecureEnv, topics: Topics, user: str = "processor") -> dict[str, str]:
    # processor-nowrite has no Redis user of its own: it uses the processor's.
    return {**sec.env("processor"), **sec.env(user), **topic_env(topics)}


def gateway_env(sec: SecureEnv, topics: Topics, port: int) -> dict[str, str]:
    return {
        **sec.env("gateway"),
        **topic_env(topics),
        "GATEWAY_REPLY_PARTITIONS": str(PARTITIONS),
        "GATEWAY_AUTH_SECRET": GATEWAY_TEST_SECRET,
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "GATEWAY_VERDICT_TIMEOUT_MS": "15000",
    }


def secrets_of(sec: SecureEnv) -> list[str]:
    users = ("admin", "processor", "gateway", "processor-nowrite")
    return [sec.kafka_password(u) for u in users] + [
        sec.redis_password(u) for u in ("admin", "processor", "gateway")
    ]


def admin_settings(sec: SecureEnv, topics: Topics) -> SimSettings:
    env = sec.env("admin")
    return SimSettings(
        _env_file=None,
        kafka_bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="admin",
        kafka_sasl_password_file=Path(env["KAFKA_SASL_PASSWORD_FILE"]),
        kafka_ssl_ca_file=sec.ca_file,
        redis_url=env["REDIS_URL"],
        redis_password_file=Path(env["REDIS_PASSWORD_FILE"]),
        redis_ssl_ca_file=sec.ca_file,
        events_topic=topics.events,
        verdicts_topic=topics.verdicts,
        dlq_topic=topics.dlq,
        policies_topic=topics.policies,
        topic_partitions=PARTITIONS,
        jwt_secret=JWT_SECRET,
    )


async def run_command(args: list[str], env: dict[str, str]):
    """`python args` with `env` over this environment: (exit code, stdout, stderr, seconds); a
    process still running after 60 s fails the test (the bound is 30 s)."""

    started = time.monotonic()
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60.0,
        stdin=subprocess.DEVNULL,
    )
    return done.returncode, done.stdout, done.stderr, time.monotonic() - started


def assert_one_line_refusal(code: int, out: str, err: str, seconds: float, prog: str, *expected: str, sec):
    last = err.strip().splitlines()[-1] if err.strip() else ""
    assert code == 2, (code, err[-2000:])
    assert seconds < START_BOUND_S, seconds
    assert last.startswith(f"{prog}: "), err[-2000:]
    for part in expected:
        assert part in last, (part, last)
    assert "Traceback" not in err and "Traceback" not in out, err[-3000:]
    for secret in secrets_of(sec):
        assert secret not in out and secret not in err


# --------------------------------------------------------------------------------------------
# 1. refusals at start
# --------------------------------------------------------------------------------------------

REFUSALS = {
    # case: (env changes given (sec, tmp), what the line must say)
    "wrong_password": (
        lambda sec, tmp: {"KAFKA_SASL_PASSWORD_FILE": _file(tmp, "not-the-password")},
        ["refused the SCRAM-SHA-512 login of user 'processor'", "KAFKA_SASL_PASSWORD"],
    ),
    "unknown_user": (
        lambda sec, tmp: {"KAFKA_SASL_USERNAME": "nobody", "KAFKA_SASL_PASSWORD_FILE": _file(tmp, "x")},
        ["refused the SCRAM-SHA-512 login of user 'nobody'"],
    ),
    "untrusted_certificate": (
        lambda sec, tmp: {"KAFKA_SSL_CA_FILE": str(sec.untrusted_ca_file)},
        ["presented a certificate that is not trusted", "KAFKA_SSL_CA_FILE"],
    ),
    "mismatched_certificate": (
        lambda sec, tmp: {"KAFKA_BOOTSTRAP_SERVERS": sec.mismatch_bootstrap},
        ["presented a certificate for another name", "KAFKA_SSL_CHECK_HOSTNAME"],
    ),
    "redis_wrong_password": (
        lambda sec, tmp: {"REDIS_PASSWORD_FILE": _file(tmp, "not-the-password")},
        ["Redis at rediss://processor@", "refused the login of user 'processor'"],
    ),
    "redis_untrusted_certificate": (
        lambda sec, tmp: {"REDIS_SSL_CA_FILE": str(sec.untrusted_ca_file)},
        ["Redis at", "not trusted", "REDIS_SSL_CA_FILE"],
    ),
}


def _file(tmp: Path, text: str) -> str:
    path = tmp / f"secret-{uuid.uuid4().hex[:6]}"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("case", sorted(REFUSALS))
async def test_a_bad_credential_or_certificate_ends_the_processor_start_with_one_line(
    secure_services: SecureEnv, tmp_path: Path, case: str
) -> None:
    sec = secure_services
    topics = await sec.admin.contract_topics(PARTITIONS)
    await sec.admin.grant(processor_acls(topics=topics, reply_topics=[topics.replies]))
    change, expected = REFUSALS[case]
    env = {**processor_env(sec, topics), **change(sec, tmp_path)}
    code, out, err, seconds = await run_command(["-m", "processor"], env)
    assert_one_line_refusal(code, out, err, seconds, "concurrency-processor", *expected, sec=sec)


async def test_a_principal_without_write_on_the_verdicts_topic_is_refused_naming_it(
    secure_services: SecureEnv,
) -> None:
    sec = secure_services
    topics = await sec.admin.contract_topics(PARTITIONS)
    await sec.admin.grant(nowrite_acls(topics))
    env = processor_env(sec, topics, user="processor-nowrite")
    code, out, err, seconds = await run_command(["-m", "processor"], env)
    expected = [f"Kafka refuses Write on topic {topics.verdicts} to User:processor-nowrite", "kafka-acls.sh"]
    assert_one_line_refusal(code, out, err, seconds, "concurrency-processor", *expected, sec=sec)


async def test_a_missing_topic_the_principal_may_not_create_is_named_with_the_command(
    secure_services: SecureEnv,
) -> None:
    sec = secure_services
    tag = uuid.uuid4().hex[:8]
    topics = Topics(  # ACLs on names that do not exist, and no Create: as a least-privilege deployment
        events=f"gone-{tag}.events",
        verdicts=f"gone-{tag}.verdicts",
        dlq=f"gone-{tag}.dlq",
        policies=f"gone-{tag}.policies",
        replies=f"gone-{tag}.replies",
        processor_group=f"gone-{tag}-processor",
        gateway_group=f"gone-{tag}-gateway",
    )
    await sec.admin.grant(processor_acls(topics=topics, reply_topics=[topics.replies]))
    code, out, err, seconds = await run_command(["-m", "processor"], processor_env(sec, topics))
    expected = [f"topic {topics.events} does not exist", "may not create it", "kafka-topics.sh"]
    assert_one_line_refusal(code, out, err, seconds, "concurrency-processor", *expected, sec=sec)


async def test_operator_commands_and_the_gateway_refuse_a_wrong_password_with_one_line(
    secure_services: SecureEnv, tmp_path: Path
) -> None:
    sec = secure_services
    topics = await sec.admin.contract_topics(PARTITIONS)
    wrong = {"KAFKA_SASL_PASSWORD_FILE": _file(tmp_path, "not-the-password")}
    env = {**processor_env(sec, topics), **wrong}
    code, out, err, seconds = await run_command(["-m", "processor", "policy", "list"], env)
    assert_one_line_refusal(code, out, err, seconds, "concurrency-processor", "refused the", sec=sec)
    env = {**gateway_env(sec, topics, free_port()), **wrong}
    code, out, err, seconds = await run_command(["-m", "gateway"], env)
    expected = ["refused the SCRAM-SHA-512 login of user 'gateway'"]
    assert_one_line_refusal(code, out, err, seconds, "concurrency-gateway", *expected, sec=sec)


async def test_terminate_as_a_principal_without_write_on_the_events_topic_names_the_acl(
    secure_services: SecureEnv,
) -> None:
    sec = secure_services
    topics = await sec.admin.contract_topics(PARTITIONS)
    await sec.admin.grant(processor_acls(topics=topics, reply_topics=[topics.replies]))
    env = processor_env(sec, topics)  # the processor's principal may read events, not write them
    code, out, err, seconds = await run_command(["-m", "processor", "terminate", "u1", "s1"], env)
    expected = [f"Kafka refuses Write on topic {topics.events} to User:processor", "kafka-acls.sh"]
    assert_one_line_refusal(code, out, err, seconds, "concurrency-processor", *expected, sec=sec)


async def test_a_gateway_with_a_wrong_redis_password_ends_naming_it(
    secure_services: SecureEnv, tmp_path: Path
) -> None:
    sec = secure_services
    topics = await sec.admin.contract_topics(PARTITIONS)
    await sec.admin.grant(gateway_acls(topics=topics))
    env = {
        **gateway_env(sec, topics, free_port()),
        "REDIS_PASSWORD_FILE": _file(tmp_path, "not-the-password"),
        "CONSOLE_ENABLED": "false",
    }
    code, out, err, seconds = await run_command(["-m", "gateway"], env)
    expected = ["Redis at rediss://gateway@", "refused the login of user 'gateway'"]
    assert_one_line_refusal(code, out, err, seconds, "concurrency-gateway", *expected, sec=sec)


async def test_a_gateway_without_its_acls_ends_naming_the_missing_one(secure_services: SecureEnv) -> None:
    sec = secure_services
    topics = await sec.admin.contract_topics(PARTITIONS)  # and no ACL for User:gateway on them
    code, out, err, seconds = await run_command(["-m", "gateway"], gateway_env(sec, topics, free_port()))
    expected = [f"topic {topics.replies}", "User:gateway", "kafka-acls.sh"]
    assert_one_line_refusal(code, out, err, seconds, "concurrency-gateway", *expected, sec=sec)


# --------------------------------------------------------------------------------------------
# 2. the acceptance flow, the gateway, a revoked ACL
# --------------------------------------------------------------------------------------------


async def test_acceptance_and_gateway_over_sasl_ssl_and_rediss_with_the_contract_acls(
    secure_services: SecureEnv, tmp_path: Path
) -> None:
    sec = secure_services
    topics = await sec.admin.contract_topics(PARTITIONS)
    await sec.admin.grant(processor_acls(topics=topics, reply_topics=[topics.replies]))
    await sec.admin.grant(gateway_acls(topics=topics))
    settings = admin_settings(sec, topics)
    admin_kafka = KafkaAccess(
        settings.kafka_bootstrap_servers,
        "SASL_SSL",
        "SCRAM-SHA-512",
        "admin",
        password_file=settings.kafka_sasl_password_file,
        ca_file=sec.ca_file,
    )
    async with ProcessorProcess(processor_env(sec, topics), tmp_path / "processor.log") as proc:
        await proc.wait_healthy(90.0)
        config = SimConfig(
            rate=150, duration=3, users=60, speed=30, sharers=0.2, drain_timeout=60, progress=False
        )
        report = await Simulation(config, settings).run()
        check = report["check"]
        assert (check["mismatches"], check["missing"], check["malformed_verdicts"]) == (0, 0, 0), check
        assert report["ok"] and report["sent"]["events"] > 200

        await _gateway_calls(sec, topics, tmp_path)
        # An ACL revoked while running: the processor holds (nothing committed, /health says
        # which), and goes on when it is granted back: the verifier below finds nothing lost or doubled.
        write = AclBinding("User:processor", "TOPIC", topics.verdicts, "WRITE")
        said = f"Kafka refuses Write on topic {topics.verdicts} to User:processor"
        await _revoked_acl_holds_and_the_grant_back_resumes(sec, topics, proc, admin_kafka, write, said, "rw")
        read = AclBinding("User:processor", "TOPIC", topics.events, "READ")
        said = f"Kafka refuses Read on topic {topics.events} to User:processor"
        await _revoked_acl_holds_and_the_grant_back_resumes(sec, topics, proc, admin_kafka, read, said, "rr")

        health, metrics = await proc.health(), await proc.metrics()
        assert proc.running, proc.log_tail()
    verified = await verify(
        admin_kafka,
        topics.events,
        topics.verdicts,
        topics.dlq,
        RedisAccess(settings.redis_url, password_file=settings.redis_password_file, ca_file=sec.ca_file),
        policies_topic=topics.policies,
    )
    assert verified.clean, verified
    shown = proc.log() + orjson.dumps(health).decode() + (metrics or "")
    for secret in secrets_of(sec):
        assert secret not in shown


async def test_the_processor_decides_over_a_tls_redis_cluster_as_its_acl_user(
    secure_services: SecureEnv, secure_redis_cluster: SecureRedisCluster, tmp_path: Path
) -> None:
    """REDIS_CLUSTER=true over rediss:// (every node TLS) as the processor's Redis user, with
    the contract's Kafka ACLs: the cluster client is built by the one place too."""
    sec = secure_services
    topics = await sec.admin.contract_topics(PARTITIONS)
    await sec.admin.grant(processor_acls(topics=topics, reply_topics=[topics.replies]))
    cluster = {"REDIS_URL": secure_redis_cluster.url_for("processor"), "REDIS_CLUSTER": "true"}
    settings = admin_settings(sec, topics).model_copy(
        update={"redis_url": secure_redis_cluster.url_for("admin"), "redis_cluster": True}
    )
    async with ProcessorProcess({**processor_env(sec, topics), **cluster}, tmp_path / "p.log") as proc:
        await proc.wait_healthy(90.0)
        config = SimConfig(
            rate=100, duration=2, users=40, speed=30, sharers=0.2, drain_timeout=60, progress=False
        )
        report = await Simulation(config, settings).run()
        check = report["check"]
        assert (check["mismatches"], check["missing"], check["malformed_verdicts"]) == (0, 0, 0), check
        assert report["ok"] and report["sent"]["events"] > 100
        assert proc.running, proc.log_tail()
        shown = proc.log()
    for secret in secrets_of(sec):
        assert secret not in shown


async def _gateway_calls(sec: SecureEnv, topics: Topics, tmp_path: Path) -> None:
    """The gateway as User:gateway and Redis user gateway: a start, its listing, a stop."""
    port = free_port()
    env = gateway_env(sec, topics, port)
    gateway = ProcessorProcess(env, tmp_path / "gateway.log", python_args=["-m", "gateway"])
    url = f"http://127.0.0.1:{port}"
    async with gateway, httpx.AsyncClient(base_url=url, timeout=20) as http:

        async def ready() -> bool:
            try:
                return (await http.get("/health")).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_until(ready, 90, interval=0.5, what="the gateway's /health")
        user = f"sec-{uuid.uuid4().hex[:6]}"
        started = await http.post("/v1/sessions", json={"deviceClass": "tv"}, headers=bearer(user))
        assert started.status_code == 200, started.text
        session = started.json()["sessionId"]
        listed = await http.get("/v1/sessions", headers=bearer(user))
        assert listed.status_code == 200 and [s["sessionId"] for s in listed.json()["sessions"]] == [session]
        stopped = await http.delete(f"/v1/sessions/{session}", headers=bearer(user))
        assert stopped.status_code == 200 and stopped.json()["reason"] == "stopped"
        shown = (await http.get("/health")).text + (await http.get("/metrics")).text
    shown += gateway.log()
    for secret in secrets_of(sec):
        assert secret not in shown


async def _revoked_acl_holds_and_the_grant_back_resumes(
    sec: SecureEnv,
    topics: Topics,
    proc: ProcessorProcess,
    admin_kafka: KafkaAccess,
    acl: AclBinding,
    said: str,
    tag: str,
) -> None:
    held = {f"{tag}-{n}" for n in range(4)}

    async def decided_ids() -> set[str]:
        return {orjson.loads(r.value)["eventId"] for r in await read_topic(admin_kafka, topics.verdicts)}

    async def says_why() -> bool:
        got = await proc.health()
        return got is not None and got[0] == 503 and said in orjson.dumps(got[1]).decode()

    async def send_held() -> None:
        producer = admin_kafka.producer(acks="all")
        await producer.start()
        try:
            for user in sorted(held):
                value = orjson.dumps({"type": "start", "userId": user, "sessionId": "s", "eventId": user})
                await producer.send_and_wait(topics.events, value, key=user.encode())
        finally:
            await producer.stop()

    async def events_ends() -> dict[int, int]:
        consumer = admin_kafka.consumer()
        await consumer.start()
        try:
            tps = [TopicPartition(topics.events, p) for p in range(PARTITIONS)]
            return {tp.partition: end for tp, end in (await consumer.end_offsets(tps)).items()}
        finally:
            await consumer.stop()

    await sec.admin.revoke([acl])
    if acl.operation == "WRITE":  # refused at the first publish: of the held events' verdicts
        ends = await events_ends()
        await send_held()
        await wait_until(says_why, 60, interval=0.5, what=f"/health saying {said!r}")
    else:
        # A fetch the broker took before the revoke may still bring records: wait for a refused
        # one, send, then for two more refusals, so the held events met refused fetches only.
        await wait_until(says_why, 60, interval=0.5, what=f"/health saying {said!r}")
        seen = proc.log().count(said)
        ends = await events_ends()
        await send_held()
        await wait_until(
            lambda: proc.log().count(said) >= seen + 2, 60, interval=0.5, what="two more refusals"
        )
    # Nothing of the held events is committed (the offsets stay below where they were written) ...
    committed = await committed_offsets(admin_kafka, topics.processor_group, topics.events)
    assert all(offset <= ends[p] for p, offset in committed.items()), (committed, ends)
    # ... or decided (an earlier verdict may be written again, identical: the contract allows
    # it, and the verifier below checks it is identical).
    assert not held & await decided_ids()
    assert said in proc.log()

    await sec.admin.grant([acl])
    await proc.wait_healthy(60.0)

    async def decided() -> bool:
        return held <= await decided_ids()

    await wait_until(decided, 60, interval=1.0, what="the held events' verdicts")


# --------------------------------------------------------------------------------------------
# 3. the shared factory over each mechanism, and mutual TLS
# --------------------------------------------------------------------------------------------


async def _produce_and_consume(kafka: KafkaAccess, topic: str) -> None:
    producer = kafka.producer(acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", key=b"k", partition=0)
    finally:
        await producer.stop()
    records = await read_topic(kafka, topic)
    assert [r.value for r in records] == [b"hello"]


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
async def test_the_shared_factory_connects_produces_and_consumes_over_each_mechanism(
    secure_services: SecureEnv, mechanism: str
) -> None:
    sec = secure_services
    [topic] = await sec.admin.create_topics([f"mech-{uuid.uuid4().hex[:8]}"])
    kafka = KafkaAccess(
        sec.bootstrap,
        "SASL_SSL",
        mechanism,
        "admin",
        password_file=sec.kafka_password_files["admin"],
        ca_file=sec.ca_file,
    )
    await check_kafka_login(kafka)
    await _produce_and_consume(kafka, topic)


async def test_mutual_tls_with_a_client_certificate_and_without_one(secure_services: SecureEnv) -> None:
    sec = secure_services
    [topic] = await sec.admin.create_topics([f"mtls-{uuid.uuid4().hex[:8]}"])
    # The certificate's CN is the principal: User:processor, granted this topic only.
    await sec.admin.grant([AclBinding("User:processor", "TOPIC", topic, op) for op in ("READ", "WRITE")])
    kafka = KafkaAccess(
        sec.mtls_bootstrap,
        "SSL",
        ca_file=sec.ca_file,
        cert_file=sec.client_cert_file,
        key_file=sec.client_key_file,
    )
    await check_kafka_login(kafka)
    await _produce_and_consume(kafka, topic)
    with pytest.raises(KafkaAccessError):
        await check_kafka_login(KafkaAccess(sec.mtls_bootstrap, "SSL", ca_file=sec.ca_file))
