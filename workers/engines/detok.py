"""Incremental detokenizing: generated tokens in, text deltas out, exactly the final text
when joined."""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["TextTail"]


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
