"""Switchyard's operations: the `switchyard` CLI, the local stack, status, benchmarks."""

__all__: list[str] = []
