import pytest

from infra.settings import load_settings


def test_defaults_come_from_the_shipped_yaml(monkeypatch):
    monkeypatch.delenv("ONEVISION_CONFIG", raising=False)
    s = load_settings()
    assert s.kafka.events_topic == "onevision.events"
    assert s.kafka.port == 19092 and s.redis.port == 16379


def test_env_overrides_yaml_and_yaml_overrides_defaults(monkeypatch, tmp_path):
    cfg = tmp_path / "prod.yaml"
    cfg.write_text("kafka:\n  bootstrap_servers: kafka-0.internal:9092\n  embedded: false\nredis:\n  url: redis://cache:6379/2\n")
    monkeypatch.setenv("ONEVISION_CONFIG", str(cfg))
    s = load_settings()
    assert s.kafka.bootstrap_servers == "kafka-0.internal:9092" and not s.kafka.embedded
    assert s.redis.host == "cache" and s.redis.port == 6379
    monkeypatch.setenv("ONEVISION_REDIS__URL", "redis://other:7000/0")
    monkeypatch.setenv("ONEVISION_STATE_DIR", str(tmp_path / "state"))
    s = load_settings()
    assert s.redis.port == 7000 and s.resolved_state_dir() == tmp_path / "state"


def test_missing_config_file_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("ONEVISION_CONFIG", str(tmp_path / "absent.yaml"))
    with pytest.raises(FileNotFoundError, match="absent.yaml"):
        load_settings()


def test_a_redis_url_is_parsed_by_redis_py_and_its_password_never_shown(monkeypatch):
    """`redis://:secret@host:6380/2` once parsed its host as ':secret@host'."""
    from features.client import redis_connection_string

    monkeypatch.setenv("ONEVISION_REDIS__URL", "redis://:secret@cache.internal:6380/2")
    s = load_settings()
    assert (s.redis.host, s.redis.port, s.redis.db, s.redis.password) == ("cache.internal", 6380, 2, "secret")
    assert "secret" not in s.redis.safe_url and "cache.internal:6380/2" in s.redis.safe_url
    assert redis_connection_string(s) == "cache.internal:6380,db=2,password=secret"
    monkeypatch.setenv("ONEVISION_REDIS__URL", "rediss://ops:pw@cache/0")
    s = load_settings()
    assert (s.redis.host, s.redis.port, s.redis.ssl) == ("cache", 6379, True)
    assert redis_connection_string(s) == "cache:6379,db=0,username=ops,password=pw,ssl=true"


def test_a_bootstrap_list_names_every_broker(monkeypatch):
    monkeypatch.setenv("ONEVISION_KAFKA__BOOTSTRAP_SERVERS", "kafka-0:9092, kafka-1:9093")
    s = load_settings()
    assert s.kafka.servers == ["kafka-0:9092", "kafka-1:9093"]
    assert (s.kafka.host, s.kafka.port) == ("kafka-0", 9092)  # where an embedded broker would listen
