"""A command re-executes itself once under the memory allocator that helps: mimalloc keeping
freed memory, else glibc's huge-page tunable."""

import json
import os
import subprocess
import sys

import pytest

from tagjax import allocator

_OURS = ("LD_PRELOAD", "GLIBC_TUNABLES", "TAGJAX_ALLOCATOR", "MIMALLOC_PURGE_DELAY")
CLEAN = {k: v for k, v in os.environ.items() if k not in _OURS and not k.startswith("MALLOC_")}
needs_mimalloc = pytest.mark.skipif(allocator.mimalloc_path() is None,
                                    reason="cmeel-mimalloc has no wheel for this platform")


@pytest.mark.parametrize("argv,expected", [
    (["python", "-m", "tagjax.train", "--config", "cnn_lstm"], True),
    (["python", "-X", "dev", "-m", "tagjax", "tag", "a.mp3"], True),
    (["/venv/bin/python", "/venv/bin/tagjax", "list"], True),
    (["python", "-m", "pytest", "-m", "tagjax.x"], False),
    (["python", "-m", "tagjaxx"], False),
    (["python", "benchmarks/train_step.py"], False),
    (["python"], False),
])
def test_what_counts_as_a_tagjax_command(argv, expected):
    assert allocator.is_a_tagjax_command(argv) == expected


def test_the_huge_page_tunable_is_added_to_those_already_set():
    assert allocator.environment({}, "huge-pages")["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
    environ = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "HOME": "/h"}
    assert allocator.environment(environ, "huge-pages") == {
        "GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1", "HOME": "/h"}
    assert allocator.environment(environ, "system") == environ


@needs_mimalloc
def test_mimalloc_is_preloaded_first_and_the_users_settings_kept():
    library = allocator.mimalloc_path()
    assert allocator.environment({"HOME": "/h"}, "mimalloc") == {
        "HOME": "/h", "LD_PRELOAD": library, "MIMALLOC_PURGE_DELAY": "-1"}
    environ = {"LD_PRELOAD": "/lib/a.so", "MIMALLOC_PURGE_DELAY": "100"}
    assert allocator.environment(environ, "mimalloc") == {
        "LD_PRELOAD": f"{library}:/lib/a.so", "MIMALLOC_PURGE_DELAY": "100"}
    assert allocator.chosen(CLEAN) == "mimalloc"
    assert not allocator.would_reexecute(allocator.environment(CLEAN))
    assert allocator.in_effect(allocator.environment(CLEAN)) == "mimalloc"


def test_no_reexecution_when_in_effect_or_refused():
    assert not allocator.would_reexecute({**CLEAN, "TAGJAX_ALLOCATOR": "system"})
    assert allocator.in_effect(CLEAN) == "system"
    huge = allocator.environment({**CLEAN, "TAGJAX_ALLOCATOR": "huge-pages"}, "huge-pages")
    assert not allocator.would_reexecute(huge)


def test_an_unknown_choice_says_so_in_one_line_and_runs_with_the_systems(capsys):
    assert allocator.chosen({"TAGJAX_ALLOCATOR": "jemalloc"}) == "system"
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "TAGJAX_ALLOCATOR='jemalloc'" in lines[0]


def _processes_that_imported_tagjax(environ):
    # `-X importtime` writes a line when a module's import ends, in every process image; a
    # command re-executes itself from tagjax/__init__.py, after importing allocator.
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "tagjax", "--help"],
                            env=environ, capture_output=True, text=True, check=True)
    return sum(line.split("|")[-1].strip() == "tagjax.allocator"
               for line in result.stderr.splitlines())


def test_a_command_reexecutes_itself_once_where_it_helps():
    assert _processes_that_imported_tagjax(CLEAN) == (
        2 if allocator.would_reexecute(CLEAN) else 1)
    assert _processes_that_imported_tagjax({**CLEAN, "TAGJAX_ALLOCATOR": "system"}) == 1
    assert _processes_that_imported_tagjax(allocator.environment(CLEAN)) == 1


# Allocates 256 MB (over glibc's largest mmap threshold, 32 MiB), frees it and allocates it
# again; prints the page faults of each allocation and whether mimalloc is mapped.
_REALLOCATE = """
import json, resource, time
import numpy as np
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
start = faults()
a = np.ones(64 << 20, np.float32)
first = faults() - start
del a
time.sleep(0.05)  # past mimalloc's default purge delay, 10 ms
start = faults()
b = np.ones(64 << 20, np.float32)
again = faults() - start
print(json.dumps(dict(first=first, again=again,
                      mimalloc="libmimalloc" in open("/proc/self/maps").read())))
"""


def _reallocation(environ) -> dict:
    result = subprocess.run([sys.executable, "-c", _REALLOCATE], env=environ,
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


@needs_mimalloc
def test_under_mimalloc_freed_memory_is_reused_without_new_page_faults():
    ours = _reallocation(allocator.environment(CLEAN, "mimalloc"))
    assert ours["mimalloc"] and ours["first"] > 0
    # The pages of the freed buffer serve the new one: no page is faulted in again.
    assert ours["again"] <= 0.05 * ours["first"]
    # glibc unmaps the freed buffer and faults the new one in afresh (the cost avoided).
    glibc = _reallocation(CLEAN)
    assert not glibc["mimalloc"] and glibc["again"] >= 0.5 * glibc["first"]
