"""The launcher's one way to start services (compose/services.py): what it starts it stops, a
port that answers already is reused and left alone, a given address is used as is."""

from __future__ import annotations

from compose.launcher import RedisServer, start_services
from compose.redis_server import redis_ping


def test_started_redis_is_stopped_with_its_temp_dir_and_a_reused_one_is_left_alone() -> None:
    with start_services(kafka=False) as own:
        server = own.redis
        assert isinstance(server, RedisServer) and own.broker is None and own.cluster is None
        assert own.redis_url == server.url and redis_ping("127.0.0.1", server.port)
        assert own.notes[0].startswith(f"redis: started at {server.url}"), own.notes
        with start_services(kafka=False, redis_port=server.port, reuse=True) as reused:
            assert reused.redis is None and reused.redis_url == server.url
            assert "leaving it alone" in reused.notes[0], reused.notes
        assert redis_ping("127.0.0.1", server.port), "stopping the reusing handle stopped nothing"
        data_dir = server.data_dir
    assert not server.running and not redis_ping("127.0.0.1", server.port)
    assert not data_dir.parent.exists(), "the temp data dir is removed"


def test_a_given_address_is_used_as_is_and_nothing_starts(tmp_path) -> None:
    with start_services(redis=False, bootstrap="127.0.0.1:1", data_dir=tmp_path) as svc:
        assert (svc.bootstrap, svc.broker, svc.redis_url) == ("127.0.0.1:1", None, None)
        assert svc.notes == ["kafka: given, 127.0.0.1:1"]
    assert list(tmp_path.iterdir()) == []
