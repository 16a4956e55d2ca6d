"""Token ids -> text pieces for a stream: never half a UTF-8 character, never part of a stop string."""

from __future__ import annotations

PROMPT_CONTEXT = 8  # prompt tokens decoded with the new ones, so the first piece gets its leading space right


class TextStream:
    """Turns the new tokens of one request into the pieces of text to send.

    The text of new tokens is decoded after a few tokens of context (tokenizers join words differently
    at the start of a text): the decoded context + new tokens minus the decoded context. Each token's
    cost is bounded: once the text ends in a whole character, it is settled, and later tokens are decoded
    after the last PROMPT_CONTEXT tokens only (not the whole text again). A piece is held back while it
    ends in an incomplete character (U+FFFD) or in what may be the start of a stop string; the text ends
    just before the first stop string.
    """

    def __init__(self, decode, prompt_ids: list[int], stop: list[str]):
        self.decode = decode
        self.stop = [s for s in stop if s]
        self._settle(list(prompt_ids[-PROMPT_CONTEXT:]), "")
        self.sent = 0  # characters of the text already handed out
        self.stopped = False

    def _settle(self, context: list[int], text: str) -> None:
        """`text`: the whole text so far, decoded up to the end of `context` (ids); later ones are pending."""
        self.context = context[-PROMPT_CONTEXT:]
        self.context_text = self.decode(self.context) if self.context else ""
        self.settled = text
        self.pending: list[int] = []  # new tokens after the context

    def text(self) -> str:
        """The text of every new token so far."""
        return self.settled + self.decode(self.context + self.pending)[len(self.context_text):]

    def push(self, token: int) -> str:
        """Add one token; return the text that may be sent now (possibly empty). Sets `stopped` on a stop string."""
        self.pending.append(token)
        text = self.text()
        if not text.endswith("\ufffd"):
            self._settle(self.context + self.pending, text)
        for stop in self.stop:
            at = text.find(stop, max(0, self.sent - len(stop) + 1))
            if at >= 0:
                self.stopped = True
                return self._take(text[:at])
        safe = len(text)
        if text.endswith("\ufffd"):
            return ""
        for stop in self.stop:  # hold back a suffix that may grow into a stop string
            for size in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:size]):
                    safe = min(safe, len(text) - size)
                    break
        return self._take(text[:safe])

    def flush(self) -> str:
        """The rest of the text at the end of the request (what was held back)."""
        if self.stopped:
            return ""
        return self._take(self.text())

    def _take(self, text: str) -> str:
        piece = text[self.sent:]
        self.sent = max(self.sent, len(text))
        return piece
