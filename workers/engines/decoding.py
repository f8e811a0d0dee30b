"""Batched autoregressive decoding with a KV cache: the CPU path of the ``generate`` engine.

Prompts are left-padded into one batch and decoded together, one token per row per step.
Each row keeps its own sampling parameters and its own seeded generator, so a row's tokens
do not depend on what else is in the batch (greedy rows are exactly the same as alone).
Rows leave the batch (and the KV cache) as they finish. Text reaches ``emit`` as it
becomes final: an incomplete UTF-8 sequence, or what might be the start of a stop
string, is held back until the next tokens settle it, so the deltas joined are exactly
the final text.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Decoded", "Prompt", "TextTail", "decode_batch"]

Emit = Callable[[int, str], None]
"""``emit(row, text)``: a text delta for row ``row`` (called from the decoding thread)."""


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


@dataclass
class Decoded:
    text: str
    finish_reason: str
    """'stop' (end of sequence or a stop string) or 'length' (max_tokens reached)."""
    prompt_tokens: int
    completion_tokens: int
    first_token_ms: int | None = None
    """Wall-clock milliseconds when the first token was sampled."""


class TextTail:
    """Incremental detokenizer for one row: tokens in, settled text deltas out.

    Each step decodes a small window: the tokens since the last settled character
    boundary, after one earlier window for context (so decoders that drop a leading space
    from a sequence's first token do not drop it here), and keeps the difference. Text
    ending in an incomplete UTF-8 sequence waits for the token that completes it.
    ``text`` only grows, so the deltas are its next characters; the last
    ``len(longest stop) - 1`` of them wait until no stop string can start there.
    """

    def __init__(self, decode: Callable[[list[int]], str], stop: Sequence[str],
                 *, incremental: bool = True) -> None:
        self._decode = decode
        self._stop = [s for s in stop if s]
        self._hold = max((len(s) for s in self._stop), default=1) - 1
        self._incremental = incremental or bool(self._stop)
        self._context = 0  # the context window starts here ...
        self._start = 0  # ... and the unsettled tokens here
        self.ids: list[int] = []
        self.text = ""
        self.sent = 0  # characters of ``text`` already handed out
        self.stopped = False

    def push(self, token: int) -> str:
        """Add a token; the text that became final (may be ''). Sets ``stopped`` when a
        stop string appears (the text is then cut before it)."""
        self.ids.append(token)
        if not self._incremental:
            return ""
        piece = self._piece()
        if not piece or piece.endswith("\ufffd"):
            return ""
        self._context, self._start = self._start, len(self.ids)
        return self._grow(piece, final=False)

    def finish(self) -> str:
        """The rest of the text, once no more tokens will come."""
        if not self._incremental:
            self.text = self._decode(self.ids)
            return self._take(len(self.text))
        piece = "" if self.stopped or self._start == len(self.ids) else self._piece()
        self._start = len(self.ids)
        return self._grow(piece, final=True)

    def _piece(self) -> str:
        """Text of the unsettled tokens, decoded after their context."""
        context = self._decode(self.ids[self._context:self._start])
        return self._decode(self.ids[self._context:])[len(context):]

    def _grow(self, piece: str, *, final: bool) -> str:
        since = max(0, len(self.text) - self._hold)  # where a new stop string could begin
        self.text += piece
        cut = min((i for i in (self.text.find(s, since) for s in self._stop) if i >= 0),
                  default=-1)
        if cut >= 0:
            self.stopped, self.text = True, self.text[:cut]
            return self._take(len(self.text))
        return self._take(len(self.text) if final else len(self.text) - self._hold)

    def _take(self, upto: int) -> str:
        if upto <= self.sent:
            return ""
        delta, self.sent = self.text[self.sent:upto], upto
        return delta


@dataclass
class _Row:
    index: int
    prompt: Prompt
    tail: TextTail
    generator: Any
    decoded: Decoded = field(init=False)


def decode_batch(model: Any, tokenizer: Any, prompts: Sequence[Prompt], *, device: str,
                 emit: Emit | None = None) -> list[Decoded]:
    """Decode every prompt to completion in one batch; results in prompt order."""
    import torch

    decode = _decoder(tokenizer)
    rows = [_Row(i, p, TextTail(decode, p.stop, incremental=p.stream and emit is not None),
                 _generator(torch, p, device)) for i, p in enumerate(prompts)]
    ids, mask = _left_pad(torch, [p.ids for p in prompts], tokenizer.pad_token_id, device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    eos = tokenizer.eos_token_id
    live = list(rows)
    cache: Any = None
    first_ms = None
    with torch.inference_mode():
        while live:
            out = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                        past_key_values=cache, use_cache=True, logits_to_keep=1)
            cache = out.past_key_values
            tokens = _sample_rows(torch, out.logits[:, -1], live)
            first_ms = first_ms or time.time_ns() // 1_000_000
            keep = [i for i, (r, t) in enumerate(zip(live, tokens, strict=True))
                    if not _step(r, t, eos, emit, first_ms)]
            if len(keep) < len(live):
                live = [live[i] for i in keep]
                if not live:
                    break
                index = torch.tensor(keep, device=mask.device)
                cache.batch_select_indices(index)
                mask, positions = mask[index], positions[index]
                tokens = [tokens[i] for i in keep]
            ids = torch.tensor(tokens, device=mask.device).unsqueeze(1)
            mask = torch.cat([mask, mask.new_ones((len(live), 1))], dim=1)
            positions = positions[:, -1:] + 1
    return [r.decoded for r in rows]


def _step(row: _Row, token: int, eos: int | None, emit: Emit | None, first_ms: int) -> bool:
    """Feed one sampled token to its row; True when the row is finished."""
    tail = row.tail
    done_by_eos = token == eos
    delta = "" if done_by_eos else tail.push(token)
    count = len(tail.ids)
    reason = ("stop" if done_by_eos or tail.stopped
              else "length" if count >= row.prompt.max_tokens else "")
    if reason:
        delta += tail.finish()
    if delta and emit is not None:
        emit(row.index, delta)
    if reason:
        row.decoded = Decoded(tail.text, reason, len(row.prompt.ids),
                              count + int(done_by_eos), first_ms)
    return bool(reason)


def _sample_rows(torch: Any, logits: Any, live: Sequence[_Row]) -> list[int]:
    """One token per live row: greedy rows in one argmax, the others each with their own
    generator."""
    tokens: list[int] = logits.argmax(dim=-1).tolist()
    for i, row in enumerate(live):
        if row.prompt.temperature != 0.0:
            tokens[i] = _sample(torch, logits[i], row.prompt, row.generator)
    return tokens


def _sample(torch: Any, logits: Any, prompt: Prompt, generator: Any) -> int:
    if prompt.temperature == 0.0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / prompt.temperature, dim=-1)
    if prompt.top_p < 1.0:
        ordered, order = probs.sort(descending=True)
        outside = ordered.cumsum(-1) - ordered > prompt.top_p  # keeps at least the top one
        probs = probs.scatter(0, order, ordered.masked_fill(outside, 0.0))
    return int(torch.multinomial(probs, 1, generator=generator))


def _generator(torch: Any, prompt: Prompt, device: str) -> Any:
    if prompt.temperature == 0.0:
        return None
    generator = torch.Generator(device=device)
    if prompt.seed is not None:
        generator.manual_seed(prompt.seed)
    else:
        generator.seed()
    return generator


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
