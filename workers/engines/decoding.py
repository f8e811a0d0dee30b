"""Batched autoregressive decoding with a KV cache: the ``generate`` engine's decoder.

A :class:`Batch` holds rows being decoded together: one KV cache, attention mask and
position per row, and each row's next input token. Rows join between steps (their prompts
are prefilled together, then their cache is left-padded to the running one's length and
appended) and leave as they finish (their cache rows are dropped, and columns no row uses
any more are trimmed). Each row keeps its own sampling parameters and its own seeded
generator, so a row's tokens do not depend on what else is in the batch: greedy rows are
exactly the same as alone. Text reaches ``emit`` as it settles (see :mod:`.detok`).

:func:`decode_batch` decodes a fixed set of prompts; :class:`~.joining.DecodeLoop` keeps
a batch running and lets new requests join it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from switchyard.workers.engines.base import Emit
from switchyard.workers.engines.detok import TextTail

__all__ = ["Batch", "Decoded", "Prompt", "Row", "decode_batch", "eos_ids", "make_rows"]



@dataclass(frozen=True)
class Prompt:
    ids: Sequence[int]
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: Sequence[str] = ()
    seed: int | None = None
    stream: bool = False
    """Only streaming rows (and rows with stop strings) are detokenized at every step;
    the others once, at the end."""
    key: str = ""
    """Whose prompt this is (the job id): a row dropped unfinished is kept under it, and
    the same job submitted again resumes from it."""


@dataclass
class Decoded:
    text: str
    finish_reason: str
    """'stop' (end of sequence or a stop string) or 'length' (max_tokens reached)."""
    prompt_tokens: int
    completion_tokens: int
    first_token_ms: int | None = None
    """Wall-clock milliseconds when the row's first token was sampled."""


@dataclass(eq=False)
class Row:
    index: int
    prompt: Prompt
    tail: TextTail
    generator: Any
    emit: Emit | None = None
    owner: Any = None
    """Whoever waits for this row (the joining loop's submission)."""
    first_ms: int | None = None
    retries: int = 0
    """Times this row was put back after running out of memory (see ``joining``)."""
    decoded: Decoded = field(init=False)

    def resume(self, ids: Sequence[int], generator: Any, first_ms: int | None) -> str:
        """Take up where an earlier row of the same prompt stopped: its tokens, its
        sampler's state and its first-token time. Returns its text so far (for a caller
        that streams it again from the start: the publisher drops what it already
        sent)."""
        text = "".join(self.tail.push(token) for token in ids)
        self.generator = generator if generator is not None else self.generator
        self.first_ms = first_ms
        return text

    def context(self) -> list[int]:
        """What a prefill of this row feeds: its prompt and the tokens it generated so
        far, so a row put back after running out of memory resumes where it stopped
        (the text already sent stays the start of its text) instead of starting over."""
        return [*self.prompt.ids, *self.tail.ids]


def make_rows(torch: Any, tokenizer: Any, prompts: Sequence[Prompt], device: str,
              emit: Emit | None, owner: Any = None) -> list[Row]:
    decode = _decoder(tokenizer)
    return [Row(i, p, TextTail(decode, p.stop, incremental=p.stream and emit is not None),
                _generator(torch, p, device), emit, owner) for i, p in enumerate(prompts)]


class Batch:
    def __init__(self, model: Any, tokenizer: Any, device: str) -> None:
        import torch

        self._torch: Any = torch
        self._model = model
        self._pad = tokenizer.pad_token_id
        self._eos = eos_ids(model, tokenizer)
        self._device = device
        self.rows: list[Row] = []
        self._cache: Any = None
        self._mask: Any = None  # [rows, cached columns]
        self._last: Any = None  # [rows, 1]: position of each row's last cached token
        self._next: list[int] = []  # each row's next input token (sampled, not yet cached)

    def admit(self, rows: Sequence[Row]) -> list[Row]:
        """Prefill new rows and sample their first tokens; they join the batch. Returns the
        rows already finished (max_tokens 1, a stop, or end of sequence)."""
        torch = self._torch
        ids, mask = _left_pad(torch, [r.context() for r in rows], self._pad, self._device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            out = self._model(input_ids=ids, attention_mask=mask, position_ids=positions,
                              use_cache=True, logits_to_keep=1)
        tokens = _sample_rows(torch, out.logits[:, -1], rows)
        now = time.time_ns() // 1_000_000
        for row in rows:
            row.first_ms = row.first_ms or now
        keep = [i for i, (r, t) in enumerate(zip(rows, tokens, strict=True))
                if not self._feed(r, t)]
        if keep:
            self._join(out.past_key_values, mask, positions[:, -1:], rows, tokens, keep)
        kept = set(keep)
        return [r for i, r in enumerate(rows) if i not in kept]

    def step(self) -> list[Row]:
        """One token for every row; returns the rows that finished."""
        torch = self._torch
        ids = torch.tensor(self._next, device=self._mask.device).unsqueeze(1)
        self._mask = torch.cat([self._mask, self._mask.new_ones((len(self.rows), 1))], dim=1)
        self._last = self._last + 1
        with torch.inference_mode():
            out = self._model(input_ids=ids, attention_mask=self._mask, position_ids=self._last,
                              past_key_values=self._cache, use_cache=True, logits_to_keep=1)
        self._cache = out.past_key_values
        tokens = _sample_rows(torch, out.logits[:, -1], self.rows)
        keep = [i for i, (r, t) in enumerate(zip(self.rows, tokens, strict=True))
                if not self._feed(r, t)]
        kept = set(keep)
        done = [r for i, r in enumerate(self.rows) if i not in kept]
        self._next = [tokens[i] for i in keep]
        if done:
            self._select(keep)
        return done

    def _feed(self, row: Row, token: int) -> bool:
        """Feed one sampled token to its row; True when the row is finished."""
        tail = row.tail
        by_eos = token in self._eos
        delta = "" if by_eos else tail.push(token)
        count = len(tail.ids)
        reason = ("stop" if by_eos or tail.stopped
                  else "length" if count >= row.prompt.max_tokens else "")
        if reason:
            delta += tail.finish()
        if delta and row.emit is not None and row.emit(row.index, delta) is False and not reason:
            reason = "stop"  # cancelled while it ran: stop now (its outcome is dropped)
        if reason:
            row.decoded = Decoded(tail.text, reason, len(row.prompt.ids),
                                  count + int(by_eos), row.first_ms)
        return bool(reason)

    def _join(self, cache: Any, mask: Any, last: Any, rows: Sequence[Row],
              tokens: Sequence[int], keep: list[int]) -> None:
        torch = self._torch
        if len(keep) < len(rows):
            index = torch.tensor(keep, device=mask.device)
            cache.batch_select_indices(index)
            mask, last = mask[index], last[index]
        if self._cache is None:
            self._cache, self._mask, self._last = cache, mask, last
        else:  # every new tensor is built before any is assigned: an OOM here changes nothing
            width = max(self._mask.shape[1], mask.shape[1])
            merged = [(torch.cat([_pad_left(torch, mine.keys, width, 2),
                                  _pad_left(torch, theirs.keys, width, 2)]),
                       torch.cat([_pad_left(torch, mine.values, width, 2),
                                  _pad_left(torch, theirs.values, width, 2)]))
                      for mine, theirs in zip(self._cache.layers, cache.layers, strict=True)]
            joined_mask = torch.cat([_pad_left(torch, self._mask, width, 1),
                                     _pad_left(torch, mask, width, 1)])
            joined_last = torch.cat([self._last, last])
            for layer, (keys, values) in zip(self._cache.layers, merged, strict=True):
                layer.keys, layer.values = keys, values
            self._mask, self._last = joined_mask, joined_last
        self.rows += [rows[i] for i in keep]
        self._next += [tokens[i] for i in keep]

    @property
    def slots(self) -> int:
        """Padded cache slots held: rows x cached columns (every layer holds that many
        keys and values)."""
        mask = self._mask
        return 0 if mask is None else int(mask.shape[0] * mask.shape[1])

    def remove(self, gone: Callable[[Row], bool]) -> None:
        """Drop the rows for which ``gone`` is true (their request failed)."""
        keep = [i for i, r in enumerate(self.rows) if not gone(r)]
        if len(keep) < len(self.rows):
            self._next = [self._next[i] for i in keep]
            self._select(keep)

    def clear(self) -> None:
        """Drop every row and the cache (after a failure: its memory is freed once the
        caller drops the batch)."""
        self.rows, self._next = [], []
        self._cache = self._mask = self._last = None

    def _select(self, keep: list[int]) -> None:
        """Keep only these rows; trim the columns that no row uses any more."""
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self._cache = self._mask = self._last = None
            return
        torch = self._torch
        index = torch.tensor(keep, device=self._mask.device)
        self._cache.batch_select_indices(index)
        self._mask, self._last = self._mask[index], self._last[index]
        start = int(self._mask.any(dim=0).int().argmax())
        if start > 0:
            for layer in self._cache.layers:
                layer.keys, layer.values = layer.keys[:, :, start:], layer.values[:, :, start:]
            self._mask = self._mask[:, start:]


def eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """Every id that ends a sequence: the tokenizer's, and the model's generation config's
    (chat models often end a turn with their own, e.g. Llama 3's ``<|eot_id|>``)."""
    ids: set[int] = set()
    config = getattr(model, "generation_config", None)
    for value in (tokenizer.eos_token_id, getattr(config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return frozenset(ids)


def decode_batch(model: Any, tokenizer: Any, prompts: Sequence[Prompt], *, device: str,
                 emit: Emit | None = None) -> list[Decoded]:
    """Decode every prompt to completion in one batch; results in prompt order."""
    import torch

    batch = Batch(model, tokenizer, device)
    rows = make_rows(torch, tokenizer, prompts, device, emit)
    batch.admit(rows)
    while batch.rows:
        batch.step()
    return [r.decoded for r in rows]


def _sample_rows(torch: Any, logits: Any, rows: Sequence[Row]) -> list[int]:
    """One token per row, with one host sync for the whole batch. Greedy rows take the
    argmax; sampling rows are sampled together (temperature and top-p as per-row vectors)
    by an exponential race, ``argmax(p / E)`` with ``E = -log(u)``, where each row's
    uniforms ``u`` come from its own generator: a row's tokens do not depend on what else
    is in the batch."""
    tokens = logits.argmax(dim=-1)
    sampled = [i for i, row in enumerate(rows) if row.prompt.temperature != 0.0]
    if sampled:
        device = logits.device
        index = torch.tensor(sampled, device=device)
        column = [[rows[i].prompt.temperature] for i in sampled]
        probs = torch.softmax(logits.index_select(0, index).float()
                              / torch.tensor(column, device=device), dim=-1)
        top_p = [rows[i].prompt.top_p for i in sampled]
        if min(top_p) < 1.0:
            ordered, order = probs.sort(dim=-1, descending=True)
            keep = torch.tensor([[p] for p in top_p], device=device)
            outside = ordered.cumsum(-1) - ordered > keep  # keeps at least the top one
            probs = probs.scatter(-1, order, ordered.masked_fill(outside, 0.0))
        vocab = probs.shape[-1]
        uniforms = torch.stack([torch.rand(vocab, generator=rows[i].generator, device=device)
                                for i in sampled])
        tokens = tokens.index_copy(0, index, (probs / -torch.log(uniforms)).argmax(dim=-1))
    return list(tokens.tolist())


def _generator(torch: Any, prompt: Prompt, device: str) -> Any:
    if prompt.temperature == 0.0:
        return None
    generator = torch.Generator(device=device)
    if prompt.seed is not None:
        generator.manual_seed(prompt.seed)
    else:
        generator.seed()
    return generator


def _pad_left(torch: Any, tensor: Any, width: int, dim: int) -> Any:
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def _left_pad(torch: Any, sequences: Sequence[Sequence[int]], pad: int,
              device: str) -> tuple[Any, Any]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        if seq:
            ids[i, width - len(seq):] = torch.tensor(list(seq), dtype=torch.long)
            mask[i, width - len(seq):] = 1
    return ids.to(device), mask.to(device)


def _decoder(tokenizer: Any) -> Callable[[list[int]], str]:
    def decode(ids: list[int]) -> str:
        return str(tokenizer.decode(ids, skip_special_tokens=True))
    return decode
