"""train.host_memory.retained_heap: inside it a freed 64 MB tensor's memory serves the next one without page
faults; outside (and after it) malloc maps and unmaps such blocks again."""

import platform
import resource

import pytest
import torch

from lmforge.train.host_memory import retained_heap

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="retained_heap acts on glibc only")

ROWS, COLUMNS = 2048, 8192  # 64 MB of float32: above glibc's largest mmap threshold (32 MB)


def faults_of_fresh_tensor() -> int:
    """Minor page faults taken to allocate and write a 64 MB tensor (freed on return)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.empty(ROWS, COLUMNS).fill_(1.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def grow_heap() -> None:
    """The heap's first 64 MB blocks: posix_memalign asks a little more than a block freed at the exact
    size, so the next one may extend the heap too; after a few, blocks come from memory already mapped."""
    for _ in range(4):
        faults_of_fresh_tensor()


def test_freed_memory_is_reused_inside_and_released_after():
    with retained_heap() as active:
        assert active
        grow_heap()
        inside = [faults_of_fresh_tensor() for _ in range(3)]
    after = faults_of_fresh_tensor()
    assert max(inside) < 30, inside  # the same pages again (a fresh 64 MB is 16,384 pages, or 32 huge ones)
    assert after >= 30, after  # defaults restored: a fresh mapping, faulted in again


def test_nested_use_keeps_the_heap_until_the_outermost_ends():
    with retained_heap():
        with retained_heap():
            grow_heap()
        assert faults_of_fresh_tensor() < 30  # the inner exit did not restore the defaults
    assert faults_of_fresh_tensor() >= 30


def test_disabled_does_nothing():
    with retained_heap(enabled=False) as active:
        assert not active
        assert faults_of_fresh_tensor() >= 30
