"""Unit tests: key names, job ids, Redis URLs, configuration loading."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from switchyard.broker import (
    ConfigError,
    JobId,
    JobIdError,
    Keys,
    RedisSettings,
    RedisSettingsError,
    SwitchyardConfig,
    load_config,
)
from switchyard.broker.errors import EntryDecodeError
from switchyard.broker.keys import JobIdSource, partition_tag
from switchyard.broker.schemas import decode_envelope
from switchyard.broker.settings import DEFAULT_PORT
from switchyard.broker.units import format_size, parse_size


def _tag(key: str) -> str:
    match = re.search(r"\{([^}]*)\}", key)
    assert match, key
    return match.group(1)


def test_every_key_of_a_partition_shares_its_hash_tag() -> None:
    part = Keys("sy").partition("minilm", 3)
    job = str(JobId.new("minilm", 3))
    keys = [*part.streams(), part.dead, part.drain("batch"), part.job(job),
            part.idempotency(None, "k"), part.reply("client")]
    assert {_tag(k) for k in keys} == {partition_tag("minilm", 3)}
    assert partition_tag("minilm", 3).startswith("minilm.3")
    assert len(set(keys)) == len(keys)
    assert Keys("sy").of_job(job) == part


def test_job_ids_round_trip_and_reject_garbage() -> None:
    job = JobId.new("echo", 2)
    assert JobId.parse(str(job)) == job
    for bad in ["", "echo", "echo.x.abc", "Echo.0.abc", "echo.0.ab-c", "a.b.c.d"]:
        with pytest.raises(JobIdError):
            JobId.parse(bad)


def test_job_id_source_gives_unique_parseable_ids_and_refills_after_fork() -> None:
    import os

    source = JobIdSource()
    ids = [source.new("echo", 1) for _ in range(2_000)]  # crosses several refills
    assert len(set(ids)) == len(ids)
    assert all(JobId.parse(i).pool == "echo" and len(JobId.parse(i).token) == 24 for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child's next id must not be the parent's next id
        os.write(write, source.new("echo", 1).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 100).decode() != source.new("echo", 1)


@pytest.mark.parametrize(("url", "host", "port", "db"), [
    ("redis://localhost", "localhost", DEFAULT_PORT, 0),
    ("redis://:secret@10.0.0.1:6390/2", "10.0.0.1", 6390, 2),
    ("rediss://cache.example:6380/0", "cache.example", 6380, 0),
])
def test_redis_urls_parse(url: str, host: str, port: int, db: int) -> None:
    s = RedisSettings.from_url(url)
    assert (s.host, s.port, s.db) == (host, port, db)
    assert "secret" not in s.display()


def test_unix_socket_url() -> None:
    s = RedisSettings.from_url("unix:///tmp/redis.sock?db=3")
    assert (s.path, s.db) == ("/tmp/redis.sock", 3)


@pytest.mark.parametrize("url", ["redis://h:1/0", "rediss://h:1/0", "unix:///tmp/r.sock"])
def test_connections_pack_commands_as_redis_py_does(url: str) -> None:
    """The hiredis packer is swapped in for every scheme, and sends the same bytes."""
    import redis.asyncio as aioredis

    pool = RedisSettings.from_url(url).connect().connection_pool
    ours = pool.make_connection()
    assert type(ours).pack_command is not aioredis.Connection.pack_command
    plain = aioredis.Connection(decode_responses=True)
    for args in [("EVALSHA", "sha", 2, "k{1}", "k{1}:2", 1.5, -3, "ünï", b"raw", "x" * 9000),
                 ("CONFIG GET", "maxmemory"), ("XADD", "s", "*", "d", "")]:
        assert b"".join(ours.pack_command(*args)) == b"".join(plain.pack_command(*args))


def test_a_sync_connection_packs_with_hiredis(redis_url: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The sync client's connection (the sync enqueue's) sends through hiredis's packer,
    not redis-py's per-argument Python encoding (issue 15: half the CPU of a sync call)."""
    from redis._parsers.encoders import Encoder

    def refuse(self: Encoder, value: object) -> bytes:
        raise AssertionError(f"redis-py encoded {value!r} in Python")

    monkeypatch.setattr(Encoder, "encode", refuse)  # (before a connection binds it)
    client = RedisSettings.from_url(redis_url).connect_sync()
    try:
        args = ("EVAL", "return {ARGV[1], ARGV[2], ARGV[3], ARGV[4]}", 1, "k{1}", 1.5, -3,
                "ünï", b"raw")
        assert client.execute_command(*args) == ["1.5", "-3", "ünï", "raw"]
    finally:
        client.close()


@pytest.mark.parametrize("url", ["http://x", "redis://h:notaport", "redis://h/abc", "unix://"])
def test_bad_redis_urls_are_typed_errors(url: str) -> None:
    with pytest.raises(RedisSettingsError):
        RedisSettings.from_url(url)


def test_default_config_serves_minilm_echo_and_tiny_llama() -> None:
    config = load_config(environ={})
    assert set(config.pools) == {"minilm", "echo", "tiny-llama", "cloud"}
    assert config.pools["cloud"].targets[0].provider == "fake"
    assert config.providers["fake"].local_fake
    assert config.models["minilm"].pool == "minilm"
    assert (config.models["tiny-llama"].kind, config.pools["tiny-llama"].engine) == (
        "chat", "generate")


def test_config_file_and_env_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[redis]\nurl = "redis://h:1/0"\n[pools.p]\nengine = "echo"\n'
                    '[models.m]\npool = "p"\n')
    config = load_config(path, environ={"SWITCHYARD_POOLS__P__MAX_BATCH": "7",
                                        "SWITCHYARD_REDIS__PREFIX": "abc"})
    assert config.redis.url == "redis://h:1/0"
    assert config.pools["p"].max_batch == 7
    assert config.redis.prefix == "abc"
    assert set(config.pools) == {"p"}


@pytest.mark.parametrize(("text", "message"), [
    ("[pools.p]\nengine = \"echo\"\ncolour = 1\n", "colour"),
    ("[models.m]\npool = \"nowhere\"\n", "unknown pool"),
    ("[models.m]\npool = \"minilm\"\nkind = \"chat\"\n", "runs the embed engine"),
    ("[pools.P]\nengine = \"echo\"\n", "pool name"),
    ("[pools.p]\nengine = \"echo\"\nmax_batch = 0\n", "max_batch"),
    ("not toml [", "invalid TOML"),
])
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, environ={})


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/switchyard.toml", environ={})


@pytest.mark.parametrize("raw", ["", "{", '{"v": 2}', '{"v": 1, "id": "x"}', "[1, 2]"])
def test_bad_payloads_raise_entry_decode_error(raw: str) -> None:
    with pytest.raises(EntryDecodeError):
        decode_envelope(raw)


def test_the_readme_config_example_is_valid(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    example = readme.split("## Configuration", 1)[1].split("```toml", 1)[1].split("```", 1)[0]
    path = tmp_path / "example.toml"
    path.write_text(example)
    config = load_config(path, environ={})
    assert config.pools["tiny-llama"].engine == "generate"
    assert config.models["tiny-llama"].kind == "chat"
    assert config.pools["minilm"].memory_budget == 2 << 30


def test_sizes_parse_and_print() -> None:
    assert parse_size("2GiB") == 2 << 30 and parse_size("512MiB") == 512 << 20
    assert parse_size("1048576") == 1 << 20
    assert format_size(2 << 30) == "2.0 GiB" and format_size(1536) == "1.5 KiB"
    with pytest.raises(ConfigError, match=r"--memory-budget 'lots' is not a size"):
        parse_size("lots", what="--memory-budget")


def test_gateway_keys_are_digests_and_belong_to_one_tenant() -> None:
    digest = "ab" * 32
    config = SwitchyardConfig.model_validate({"tenants": {"a": {"api_keys_sha256": [digest]}},
                                              "gateway": {"port": 9000, "auth": "keys"}})
    assert config.tenants["a"].api_keys_sha256 == [digest] and config.gateway.port == 9000
    with pytest.raises(ValidationError, match="digests"):
        SwitchyardConfig.model_validate({"tenants": {"a": {"api_keys_sha256": ["sk-raw"]}}})
    with pytest.raises(ValidationError, match="belongs to tenants"):
        SwitchyardConfig.model_validate({"tenants": {"a": {"api_keys_sha256": [digest]},
                                                     "b": {"api_keys_sha256": [digest]}}})
    with pytest.raises(ValidationError):
        SwitchyardConfig.model_validate({"gateway": {"auth": "open"}})
    with pytest.raises(ValidationError):
        SwitchyardConfig.model_validate({"gateway": {"max_retry_after_s": 600}})
