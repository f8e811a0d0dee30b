"""The `switchyard` command as a user runs it: subprocesses against a real Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from switchyard.broker.locate import STATE_DIR_ENV
from switchyard.ops.redis_server import free_port

CONFIG = """
[redis]
url = "{url}"
prefix = "{prefix}"
[worker]
block_ms = 50
heartbeat_s = 0.2
[gateway]
port = {gateway_port}
[pools.echo]
engine = "echo"
[models.echo]
pool = "echo"
"""


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "switchyard.ops", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def config_file(tmp_path: Path, redis_url: str, prefix: str) -> Path:
    path = tmp_path / "switchyard.toml"
    path.write_text(CONFIG.format(url=redis_url, prefix=prefix, gateway_port=free_port()))
    return path


def test_submit_status_and_worker(config_file: Path, tmp_path: Path) -> None:
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen([sys.executable, "-m", "switchyard.ops", "worker", "--pool", "echo",
                               "--config", str(config_file)], stdout=log, stderr=log)
    try:
        out = _run("submit", "embed", "--model", "echo", "--config", str(config_file), "hi")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["echo"] == ["hi"]
        status = _run("status", "--json", "--config", str(config_file))
        assert status.returncode == 0, status.stderr
        pools = json.loads(status.stdout)["pools"]
        assert pools[0]["pool"] == "echo" and len(pools[0]["workers"]) == 1
        assert {s["priority"] for s in pools[0]["streams"]} == {"interactive", "standard",
                                                                 "batch"}
        assert "workers alive: 1" in _run("status", "--config", str(config_file)).stdout
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0


@pytest.mark.parametrize(("args", "message"), [
    (["submit", "embed", "--model", "nope", "x"], "UnknownModel"),
    (["worker", "--pool", "nope"], "UnknownPool"),
    (["status", "--redis-url", "http://x"], "RedisSettingsError"),
])
def test_errors_are_one_readable_line(config_file: Path, args: list[str], message: str) -> None:
    out = _run(*args[:1], *args[1:], "--config", str(config_file))
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("switchyard: error:") and message in lines[0]


def test_unreachable_redis_is_one_line(tmp_path: Path) -> None:
    out = _run("status", "--redis-url", f"redis://127.0.0.1:{free_port()}/0")
    assert out.returncode != 0
    assert out.stderr.strip().count("\n") == 0 and "not reachable" in out.stderr


def test_up_serves_and_stops_cleanly_on_ctrl_c(tmp_path: Path, prefix: str) -> None:
    up_serves_a_job([sys.executable, "-m", "switchyard.ops"], tmp_path, prefix)


def test_up_cluster_serves_on_a_local_redis_cluster(tmp_path: Path, prefix: str) -> None:
    up_serves_a_job([sys.executable, "-m", "switchyard.ops"], tmp_path, prefix, cluster=True)


def up_serves_a_job(switchyard: list[str], tmp_path: Path, prefix: str, *,
                    gateway: bool = True, cluster: bool = False) -> None:
    """`switchyard up` (``switchyard`` is the command line that runs it) serves an echo job
    submitted with the same command, and (``gateway``) one through its HTTP gateway with
    the key it made, then stops everything on Ctrl-C. ``cluster``: ``up --cluster``."""
    port, gateway_port = free_port(), free_port()
    config = tmp_path / "up.toml"
    text = CONFIG.format(url=f"redis://127.0.0.1:{port}/0", prefix=prefix,
                         gateway_port=gateway_port)
    if cluster:  # (a cluster's ports are its own: the CLI finds them in the state folder)
        text = text.replace(f'url = "redis://127.0.0.1:{port}/0"\n', "")
    config.write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env[STATE_DIR_ENV] = "state"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*switchyard, *args, "--config", str(config)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60, env=env)

    # A relative state folder, as `make up` uses (.switchyard under the working directory).
    up = subprocess.Popen([*switchyard, "up", "--config", str(config), "--state-dir", "state",
                           *(["--cluster"] if cluster else [])],
                          stdout=subprocess.PIPE, cwd=tmp_path, stderr=subprocess.STDOUT,
                          text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            out = run("submit", "embed", "--model", "echo", "--timeout", "5", "ping")
            if out.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["echo"] == ["ping"]
        data = tmp_path / "state" / ("cluster/node0" if cluster else "redis")
        assert (data / "appendonlydir").exists() or any(data.glob("appendonly*"))
        if cluster:
            assert "redis+cluster://" in (tmp_path / "state" / "redis.url").read_text()
        if gateway:
            _gateway_serves(tmp_path / "state" / "gateway.key", gateway_port, deadline)
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(60)
    output = up.stdout.read() if up.stdout else ""
    assert code == 0, output
    assert "stopped" in output and "exited" not in output, output  # no child crashed
    # Redis is gone with it:
    assert run("status").returncode != 0


def _gateway_serves(key_file: Path, port: int, deadline: float) -> None:
    """The gateway `up` started answers the openai SDK with the key `up` printed."""
    import openai

    while not key_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert key_file.stat().st_mode & 0o077 == 0
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1",
                           api_key=key_file.read_text().strip(), max_retries=0)
    while True:
        try:
            embedded = client.embeddings.create(model="echo", input="ping",
                                                encoding_format="float")
            break
        except openai.APIConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert embedded.data[0].index == 0


CONFIG_NO_REDIS = """
[redis]
prefix = "{prefix}"
[worker]
block_ms = 50
[pools.echo]
engine = "echo"
[models.echo]
pool = "echo"
"""


def test_up_runs_redis_with_a_password_that_a_second_shell_finds(
    tmp_path: Path, prefix: str,
) -> None:
    """Issue 14, point 1: with no Redis configured, `up` runs one on loopback with a
    generated password, written (0600) to .switchyard/redis.url; the CLI and the Python
    client in another shell read it; no command line carries the password."""
    import socket
    from urllib.parse import urlsplit

    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 6399)) == 0:
            pytest.skip("port 6399 (up's default) is taken on this host")
    config = tmp_path / "up.toml"
    config.write_text(CONFIG_NO_REDIS.format(prefix=prefix))
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "SWITCHYARD_STATE_DIR", "SWITCHYARD_REDIS__URL")}
    cli = [sys.executable, "-m", "switchyard.ops"]
    up = subprocess.Popen([*cli, "up", "--config", str(config)], cwd=tmp_path, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url_file = tmp_path / ".switchyard" / "redis.url"
    try:
        deadline = time.monotonic() + 60
        while True:
            out = subprocess.run([*cli, "submit", "embed", "--model", "echo", "--timeout", "5",
                                  "--config", str(config), "ping"], cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=60)
            if out.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert out.returncode == 0, out.stderr
        assert oct(url_file.stat().st_mode & 0o777) == "0o600"
        parts = urlsplit(url_file.read_text().strip())
        assert parts.hostname == "127.0.0.1" and parts.port == 6399
        password = parts.password
        assert password and len(password) >= 24
        client = redis.Redis(port=6399, socket_connect_timeout=2)
        with pytest.raises(redis.AuthenticationError):
            client.ping()  # no password: refused
        client.close()
        code = ("import asyncio\nfrom switchyard import AsyncClient, load_config\n"
                "async def main():\n"
                f"    async with AsyncClient(load_config({str(config)!r})) as c:\n"
                "        print((await (await c.embed('echo', 'py')).result(timeout=10)).echo)\n"
                "asyncio.run(main())\n")
        py = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
        assert py.stdout.strip() == "['py']", py.stderr
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                assert password not in cmdline.read_text(errors="replace")
            except OSError:
                continue
    finally:
        up.send_signal(signal.SIGINT)
        code_up = up.wait(60)
    output = up.stdout.read() if up.stdout else ""
    assert code_up == 0 and "exited" not in output, output
    assert password not in output  # the banner shows it redacted
    assert not url_file.exists()
