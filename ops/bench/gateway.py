"""`switchyard bench gateway`: what the HTTP gateway adds, with the echo engine behind it.

(a) throughput: the Python async client's own rate for the same jobs (64 concurrent
    callers: the queue's ceiling for them), then ``wrk`` (compiled, so the load generator
    is not the bottleneck; its CPU is reported) with 64 connections of non-streaming chat
    completions, through the gateway beside a bare uvicorn endpoint that returns a canned
    completion (``canned.py``);
(b) sequential requests: latency p50/p99 through the gateway beside the Python async
    client doing the same jobs (added = the difference), and the same HTTP client's round
    trip to the canned endpoint (what HTTP itself costs the caller, gateway or not);
    ``wrk`` with one connection gives the same latencies with a compiled client, whose
    own cost is negligible: its p50 through the gateway less the Python client's is the
    gateway's added latency proper;
(c) streaming: time to the first text through the gateway (httpx, and a raw HTTP/1.1
    client on a kept-alive connection) beside the client's first delta;
(d) (a) again with ``--workers 2`` gateway processes.
Each round measures every shape beside its baseline; the report gives each round and the
medians. Needs ``wrk`` (Debian: ``apt-get install wrk``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from switchyard.broker.errors import SwitchyardError
from switchyard.dispatcher.client import AsyncClient
from switchyard.ops.bench.common import BenchEnv, bench_env, percentile
from switchyard.ops.processes import GatewayProcess, WorkerProcess
from switchyard.ops.redis_server import free_port
from switchyard.workers.supervisor import stop_process

__all__ = ["GatewayBenchOptions", "GatewayReport", "render", "run_gateway_bench"]

KEY = "sk-bench-gateway"
CONFIG = f"""
[redis]
prefix = "sybench-gw"
[tenants.bench]
api_keys_sha256 = ["{hashlib.sha256(KEY.encode()).hexdigest()}"]
[pools.echo]
engine = "echo"
max_batch = 100
[pools.echo.caps]
interactive = 10000000
standard = 10000000
[models.echo-chat]
pool = "echo"
kind = "chat"
"""
MESSAGES = [{"role": "user", "content": "the quick brown fox jumps over the lazy dog"}]
BODY = {"model": "echo-chat", "messages": MESSAGES, "max_tokens": 16}


@dataclass(frozen=True)
class GatewayBenchOptions:
    rounds: int = 3
    seconds: float = 10.0
    connections: int = 64
    sequential: int = 300


@dataclass
class Round:
    client_rps: float
    """The same jobs from the Python async client, ``connections`` concurrent callers: the
    queue's own ceiling for them, which no HTTP front can pass."""
    canned_rps: float
    gateway_rps: float
    gateway2_rps: float
    wrk_cores: float
    """CPU cores the load generator used during the gateway run."""
    client_p50_ms: float
    client_p99_ms: float
    http_p50_ms: float
    http_p99_ms: float
    client_ttft_ms: float
    http_ttft_ms: float
    canned_p50_ms: float
    """The same HTTP client's sequential round trip to the canned endpoint."""
    canned_p99_ms: float
    wrk_canned_p50_ms: float
    """Sequential requests from wrk (one connection): the canned endpoint, p50 ..."""
    wrk_canned_p99_ms: float
    wrk_gateway_p50_ms: float
    """... and the gateway: latency with a compiled HTTP client's negligible cost."""
    wrk_gateway_p99_ms: float
    lean_ttft_ms: float
    """Time to the first text through the gateway from the raw HTTP client (p50)."""


@dataclass
class GatewayReport:
    rounds: list[Round] = field(default_factory=list)

    def median(self, name: str) -> float:
        return float(statistics.median(float(getattr(r, name)) for r in self.rounds))


def _wrk(url: str, seconds: float, connections: int, folder: Path) -> tuple[float, float]:
    """(requests/s, CPU cores wrk itself used); refuses a run with failed responses."""
    out, cores = _wrk_run(url, seconds, connections, folder)
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise SwitchyardError(f"no rate in wrk's output: {out!r}")
    return float(match[1]), cores


def _wrk_latency(url: str, seconds: float, folder: Path) -> tuple[float, float]:
    """One connection, one request at a time, from a compiled client: (p50, p99) in ms."""
    out, _ = _wrk_run(url, seconds, 1, folder, "--latency")
    found = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    return _ms(found["50"]), _ms(found["99"])


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _wrk_run(url: str, seconds: float, connections: int, folder: Path, *extra: str
             ) -> tuple[str, float]:
    script = folder / "post.lua"
    script.write_text(f'wrk.method = "POST"\nwrk.body = {json.dumps(json.dumps(BODY))}\n'
                      'wrk.headers["Content-Type"] = "application/json"\n'
                      f'wrk.headers["Authorization"] = "Bearer {KEY}"\n')
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    threads = min(2, connections)
    duration = f"-d{max(1, round(seconds))}s"  # (wrk takes whole seconds)
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", duration, "-s",
                          str(script), *extra, url], capture_output=True, text=True,
                         check=True, timeout=seconds + 60).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad or "Socket errors" in out:
        raise SwitchyardError(f"wrk saw failed requests: {out.strip().splitlines()[-3:]}")
    return out, cpu / seconds


class _LeanClient:
    """A raw HTTP/1.1 client on one kept-alive connection, for time to first text: it
    writes the request and scans the bytes as they come (no parsing beyond finding the
    first text and the end of the chunked body), so its own cost is next to nothing."""

    def __init__(self, base: str) -> None:
        self._host, port = base.removeprefix("http://").split(":")
        self._port = int(port)
        body = json.dumps({**BODY, "stream": True}).encode()
        self._request = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: {self._host}\r\nAuthorization: "
            f"Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: "
            f"{len(body)}\r\n\r\n").encode() + body
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def ttft(self) -> float:
        """Milliseconds from the request to the first text of its stream."""
        if self._streams is None:
            self._streams = await asyncio.open_connection(self._host, self._port)
        reader, writer = self._streams
        t0 = time.perf_counter()
        writer.write(self._request)
        seen, first = b"", 0.0
        while not seen.endswith(b"\r\n0\r\n\r\n"):  # the chunked body's end
            chunk = await reader.read(65_536)
            if not chunk:
                raise SwitchyardError("the gateway closed the connection")
            seen += chunk
            if not first and b'"content":"' in seen.replace(b'"content":""', b""):
                first = time.perf_counter()
        assert first, seen[:300]
        return (first - t0) * 1000

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()


async def _sequential(env: BenchEnv, base: str, canned: str, n: int
                      ) -> tuple[list[float], ...]:
    """Latencies (ms) of n one-at-a-time jobs: client, HTTP; then first text: client,
    HTTP (streamed). Alternating request by request, so drift moves both alike."""
    client_ms, http_ms, client_ttft, http_ttft, canned_ms, lean_ttft = [], [], [], [], [], []
    headers = {"authorization": f"Bearer {KEY}"}
    lean_client = _LeanClient(base)
    async with AsyncClient(env.config, redis_url=env.redis_url) as client, \
            httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
        for i in range(n + 20):  # 20 of warm-up
            t0 = time.perf_counter()
            job = await client.chat("echo-chat", MESSAGES, max_tokens=16, tenant="bench")
            await job.result(timeout=30)
            t1 = time.perf_counter()
            reply = await http.post("/v1/chat/completions", json=BODY)
            t2 = time.perf_counter()
            assert reply.status_code == 200, reply.text
            streamed = await client.chat("echo-chat", MESSAGES, max_tokens=16, stream=True,
                                         tenant="bench")
            async for _ in streamed:
                break
            t3 = time.perf_counter()
            await streamed.result(timeout=30)
            t6 = time.perf_counter()
            await http.post(f"{canned}/v1/chat/completions", json=BODY)
            t7 = time.perf_counter()
            async with http.stream("POST", "/v1/chat/completions",
                                   json={**BODY, "stream": True}) as response:
                lines = response.aiter_lines()
                async for line in lines:
                    if '"content":"' in line and '"content":""' not in line:
                        t5 = time.perf_counter()
                        break
                async for _ in lines:
                    pass
            lean = await lean_client.ttft()
            if i >= 20:
                lean_ttft.append(lean)
                client_ms.append((t1 - t0) * 1000)
                http_ms.append((t2 - t1) * 1000)
                client_ttft.append((t3 - t2) * 1000)
                http_ttft.append((t5 - t7) * 1000)
                canned_ms.append((t7 - t6) * 1000)
    lean_client.close()
    return client_ms, http_ms, client_ttft, http_ttft, canned_ms, lean_ttft


async def _client_rate(env: BenchEnv, seconds: float, concurrency: int) -> float:
    """Jobs/s of ``concurrency`` callers each awaiting one job's result, then the next."""
    done = 0
    async with AsyncClient(env.config, redis_url=env.redis_url) as client:
        end = time.perf_counter() + seconds

        async def caller() -> None:
            nonlocal done
            while time.perf_counter() < end:
                job = await client.chat("echo-chat", MESSAGES, max_tokens=16, tenant="bench")
                await job.result(timeout=30)
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        return done / (time.perf_counter() - start)


def _round(env: BenchEnv, options: GatewayBenchOptions) -> Round:
    client_rps = asyncio.run(_client_rate(env, options.seconds, options.connections))
    with ExitStack() as stack:
        port = free_port()
        canned = subprocess.Popen([sys.executable, "-m", "switchyard.ops.bench.canned",
                                   str(port)])
        stack.callback(stop_process, canned)
        _wait_up(f"http://127.0.0.1:{port}/")
        canned_url = f"http://127.0.0.1:{port}/v1/chat/completions"
        canned_rps, _ = _wrk(canned_url, options.seconds, options.connections, env.folder)
        canned_wrk = _wrk_latency(canned_url, options.seconds / 2, env.folder)
        one = stack.enter_context(GatewayProcess(env.redis_url, env.config_path))
        gateway_rps, cores = _wrk(f"{one.url}/v1/chat/completions", options.seconds,
                                  options.connections, env.folder)
        gateway_wrk = _wrk_latency(f"{one.url}/v1/chat/completions", options.seconds / 2,
                                   env.folder)
        seq = asyncio.run(_sequential(env, one.url, f"http://127.0.0.1:{port}",
                                      options.sequential))
        one.stop()
        two = stack.enter_context(GatewayProcess(env.redis_url, env.config_path, workers=2))
        gateway2_rps, _ = _wrk(f"{two.url}/v1/chat/completions", options.seconds,
                               options.connections, env.folder)
    client_ms, http_ms, client_ttft, http_ttft, canned_ms, lean_ttft = seq
    return Round(client_rps, canned_rps, gateway_rps, gateway2_rps, cores,
                 percentile(client_ms, 50), percentile(client_ms, 99),
                 percentile(http_ms, 50), percentile(http_ms, 99),
                 percentile(client_ttft, 50), percentile(http_ttft, 50),
                 percentile(canned_ms, 50), percentile(canned_ms, 99), *canned_wrk,
                 *gateway_wrk, percentile(lean_ttft, 50))


def _wait_up(url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.post(url, timeout=1)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def run_gateway_bench(options: GatewayBenchOptions) -> GatewayReport:
    if shutil.which("wrk") is None:
        raise SwitchyardError("bench gateway needs wrk (Debian: apt-get install wrk)")
    report = GatewayReport()
    with bench_env(CONFIG) as env, WorkerProcess("echo", env.redis_url, env.config_path,
                                                 env.config):
        for _ in range(options.rounds):
            report.rounds.append(_round(env, options))
    return report


def render(report: GatewayReport) -> str:
    lines = ["round  client rps  canned rps  gateway rps (share)  --workers 2 rps (share)  "
             "wrk cores  p50 client/http (+added) ms  p99 client/http (+added) ms  TTFT "
             "client/http (+added) ms  canned p50/p99 ms  wrk -c1 p50/p99 canned | gateway ms"]
    for i, r in enumerate(report.rounds, 1):
        lines.append(
            f"{i:>5}  {r.client_rps:>10,.0f}  {r.canned_rps:>10,.0f}  {r.gateway_rps:>11,.0f} "
            f"({r.gateway_rps / r.canned_rps:.0%})  {r.gateway2_rps:>15,.0f} "
            f"({r.gateway2_rps / r.canned_rps:.0%})  {r.wrk_cores:>9.2f}  "
            f"{r.client_p50_ms:.2f}/{r.http_p50_ms:.2f} (+{r.http_p50_ms - r.client_p50_ms:.2f})"
            f"  {r.client_p99_ms:.2f}/{r.http_p99_ms:.2f} "
            f"(+{r.http_p99_ms - r.client_p99_ms:.2f})  {r.client_ttft_ms:.2f}/"
            f"{r.http_ttft_ms:.2f} (+{r.http_ttft_ms - r.client_ttft_ms:.2f})  "
            f"{r.canned_p50_ms:.2f}/{r.canned_p99_ms:.2f}  {r.wrk_canned_p50_ms:.2f}/"
            f"{r.wrk_canned_p99_ms:.2f} | {r.wrk_gateway_p50_ms:.2f}/{r.wrk_gateway_p99_ms:.2f}")
    share = statistics.median(r.gateway_rps / r.canned_rps for r in report.rounds)
    share2 = statistics.median(r.gateway2_rps / r.canned_rps for r in report.rounds)
    of_queue = statistics.median(r.gateway_rps / r.client_rps for r in report.rounds)
    added = statistics.median(r.http_p50_ms - r.client_p50_ms for r in report.rounds)
    added99 = statistics.median(r.http_p99_ms - r.client_p99_ms for r in report.rounds)
    ttft = statistics.median(r.http_ttft_ms - r.client_ttft_ms for r in report.rounds)
    http = statistics.median(r.canned_p50_ms for r in report.rounds)
    lean = statistics.median(r.wrk_gateway_p50_ms - r.client_p50_ms for r in report.rounds)
    lean99 = statistics.median(r.wrk_gateway_p99_ms - r.client_p99_ms for r in report.rounds)
    lean_ttft = statistics.median(r.lean_ttft_ms - r.client_ttft_ms for r in report.rounds)
    lines.append(f"medians: throughput {share:.1%} of the canned endpoint (--workers 2: "
                 f"{share2:.1%}; {of_queue:.1%} of the client's own rate); added latency "
                 f"p50 {added:.2f} ms ({added - http:.2f} ms past the HTTP round trip to the "
                 f"canned endpoint, {http:.2f} ms), p99 {added99:.2f} ms; TTFT added "
                 f"{ttft:.2f} ms; with wrk as the (compiled) client: added p50 {lean:.2f} "
                 f"ms, p99 {lean99:.2f} ms; TTFT added from a raw HTTP client "
                 f"{lean_ttft:.2f} ms")
    lines.append(json.dumps({"rounds": [asdict(r) for r in report.rounds],
                             "throughput_share": round(share, 3),
                             "throughput_share_2_workers": round(share2, 3),
                             "share_of_client_rate": round(of_queue, 3),
                             "added_p50_ms": round(added, 3), "added_p99_ms": round(added99, 3),
                             "ttft_added_ms": round(ttft, 3),
                             "canned_p50_ms": round(http, 3),
                             "wrk_added_p50_ms": round(lean, 3),
                             "wrk_added_p99_ms": round(lean99, 3),
                             "lean_ttft_added_ms": round(lean_ttft, 3)}))
    return "\n".join(lines)
