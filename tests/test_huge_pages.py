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


def _command_environment(environ):
    result = subprocess.run([sys.executable, "-m", "tagjax.huge_pages"], env=environ,
                            capture_output=True, text=True, check=True)
    return result.stdout.strip()


def test_a_command_runs_under_the_tunable_where_it_helps():
    environ = {k: v for k, v in os.environ.items()
               if k not in ("GLIBC_TUNABLES", "TAGJAX_HUGE_PAGES")}
    expected = "glibc.malloc.hugetlb=1" if huge_pages.would_reexecute(environ) else ""
    assert _command_environment(environ) == f"GLIBC_TUNABLES={expected}"
    assert _command_environment({**environ, "TAGJAX_HUGE_PAGES": "0"}) == "GLIBC_TUNABLES="
    assert _command_environment({**environ, "GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}) == (
        "GLIBC_TUNABLES=glibc.malloc.hugetlb=0")
