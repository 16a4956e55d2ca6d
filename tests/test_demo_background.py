"""The demo's background fine-tuning process (demo.curve.BackgroundCurve) never outlives the demo, however
the demo ends: a real spawned pool worker, busy, whose parent is killed by a signal that runs no cleanup."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")

PARENT = """
import multiprocessing, os, time
from lmforge.demo.curve import follow_parent

if __name__ == "__main__":
    pool = multiprocessing.get_context("spawn").Pool(1, initializer=follow_parent, initargs=(1, os.getpid()))
    worker = pool.apply(os.getpid)
    pool.apply_async(time.sleep, (120,))  # the worker is busy, as while it fine-tunes
    print(worker, flush=True)
    time.sleep(120)
"""


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie waiting to be reaped has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_the_background_worker_ends_when_the_demo_is_killed(tmp_path, sig):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(parent.stdout.readline())
        time.sleep(0.5)
        assert alive(worker)
        parent.send_signal(sig)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        while alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(worker), "the busy worker outlived its killed parent"
    finally:
        parent.kill()
