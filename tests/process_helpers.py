"""Starting real lmforge processes that a test interrupts with Ctrl-C (SIGINT)."""

from __future__ import annotations

import signal


def ctrl_c_default() -> None:
    """`preexec_fn` for `subprocess.Popen`: SIGINT back to its default in the child, so that the child's Python
    turns it into KeyboardInterrupt even when the tests run in a background job (a shell starts those with
    SIGINT ignored, children inherit that, and Python then leaves it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
