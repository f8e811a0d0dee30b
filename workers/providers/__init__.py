"""Adapters for external LLM APIs behind one canonical shape (see ``base.py``)."""

from switchyard.workers.providers.base import Completion, Provider, ProviderError, build_provider

__all__ = ["Completion", "Provider", "ProviderError", "build_provider"]
