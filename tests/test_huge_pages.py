"""A command re-executes itself under glibc's huge-page tunable where that helps."""

import os
import subprocess
import sys

import pytest

from tagjax import huge_pages


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
    assert huge_pages.is_a_tagjax_command(argv) == expected


def test_the_tunable_is_added_to_those_already_set():
    assert huge_pages.environment_with_huge_pages({})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
    environ = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "HOME": "/h"}
    assert huge_pages.environment_with_huge_pages(environ) == {
        "GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1", "HOME": "/h"}
    # Set already, or refused by the user: no re-execution.
    assert not huge_pages.would_reexecute({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})
    assert not huge_pages.would_reexecute({"TAGJAX_HUGE_PAGES": "0"})


def _processes_that_imported_tagjax(environ):
    # `-X importtime` writes a line when a module's import ends, in every process image; a
    # command re-executes itself from tagjax/__init__.py, after importing huge_pages.
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "tagjax", "--help"],
                            env=environ, capture_output=True, text=True, check=True)
    return sum(line.split("|")[-1].strip() == "tagjax.huge_pages"
               for line in result.stderr.splitlines())


def test_a_command_reexecutes_itself_once_where_it_helps():
    environ = {k: v for k, v in os.environ.items()
               if k not in ("GLIBC_TUNABLES", "TAGJAX_HUGE_PAGES")}
    assert _processes_that_imported_tagjax(environ) == (
        2 if huge_pages.would_reexecute(environ) else 1)
    assert _processes_that_imported_tagjax({**environ, "TAGJAX_HUGE_PAGES": "0"}) == 1
    assert _processes_that_imported_tagjax(
        {**environ, "GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) == 1
