"""train.host_memory.retained_heap: inside it a freed 64 MB tensor's memory serves the next one without page
faults; outside (and after it) malloc maps and unmaps such blocks again.

Each case runs in a fresh Python process: a process that has already used the heap for large blocks (the
rest of the suite trains models) may serve a 64 MB tensor from a free block of its heap without faults,
whatever malloc's settings, which would hide what the settings do.
"""

import json
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="retained_heap acts on glibc only")

PRELUDE = """
import json, resource, torch
from lmforge.train.host_memory import retained_heap

def fresh():  # minor page faults taken to allocate and write a 64 MB float32 tensor (freed on return)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(2048, 8192).fill_(1.0)  # 64 MB: above glibc's largest mmap threshold (32 MB)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

def grow():  # posix_memalign asks a little more than a block freed at the exact size, so the first few
    for _ in range(4):  # 64 MB blocks may extend the heap; after them blocks come from memory already mapped
        fresh()
"""
FRESH_64MB = 30  # a fresh 64 MB block is 16,384 pages (or 32 huge pages): at least this many faults


def run_case(body: str) -> dict:
    """Run PRELUDE + body in a new interpreter; body prints one JSON object."""
    done = subprocess.run([sys.executable, "-c", PRELUDE + body], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_freed_memory_is_reused_inside_and_released_after():
    result = run_case("""
with retained_heap() as active:
    grow()
    inside = [fresh() for _ in range(3)]
print(json.dumps({"active": active, "inside": inside, "after": fresh()}))
""")
    assert result["active"]
    assert max(result["inside"]) < FRESH_64MB, result  # the same pages again
    assert result["after"] >= FRESH_64MB, result  # defaults restored and the heap trimmed: faulted in again


def test_nested_use_keeps_the_heap_until_the_outermost_ends():
    result = run_case("""
with retained_heap():
    with retained_heap():
        grow()
    between = fresh()
print(json.dumps({"between": between, "after": fresh()}))
""")
    assert result["between"] < FRESH_64MB, result  # the inner exit did not restore the defaults
    assert result["after"] >= FRESH_64MB, result


def test_disabled_does_nothing():
    result = run_case("""
with retained_heap(enabled=False) as active:
    grow()
    inside = [fresh() for _ in range(3)]
print(json.dumps({"active": active, "inside": inside}))
""")
    assert not result["active"]
    assert min(result["inside"]) >= FRESH_64MB, result  # every block mapped afresh
