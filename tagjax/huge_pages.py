"""Transparent huge pages for the large CPU buffers: a command re-executes itself once under
glibc's `glibc.malloc.hugetlb=1` tunable.

XLA's CPU runtime allocates a program's temporaries afresh on every call, and glibc serves an
allocation over 32 MiB (its largest mmap threshold) with new memory that the kernel faults in
and zeroes 4 KiB at a time: a third of `cnn_lstm`'s training step on a 2-core AMD EPYC (313 ms,
201 ms with the tunable; benchmarks/train_step.py, idle). Under the tunable, malloc asks for
transparent huge pages (2 MiB) instead, which the kernel grants on request where
/sys/kernel/mm/transparent_hugepage/enabled says `[madvise]` (the usual default; `[always]`
needs nothing, `[never]` allows nothing). glibc reads its tunables only when a process starts,
hence the re-execution. Your own programs get the same with
`GLIBC_TUNABLES=glibc.malloc.hugetlb=1` in the environment; `TAGJAX_HUGE_PAGES=0` keeps a
command from re-executing.
"""

import os
import sys

TUNABLE = "glibc.malloc.hugetlb"
_THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"
_FIRST_GLIBC_WITH_TUNABLE = (2, 35)


def _glibc_version() -> tuple[int, ...] | None:
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # "glibc 2.36"
        return tuple(int(part) for part in version.split(".")[:2]) if name == "glibc" else None
    except (AttributeError, ValueError, OSError):  # not glibc, or not a POSIX system
        return None


def _granted_on_request() -> bool:
    try:
        with open(_THP_MODE) as mode:
            return "[madvise]" in mode.read()
    except OSError:
        return False


def would_reexecute(environ=os.environ) -> bool:
    """Whether `reexecute_with_huge_pages` would re-execute: Linux with glibc 2.35 or newer,
    huge pages granted on request, the tunable not yet set and `TAGJAX_HUGE_PAGES` not 0."""
    if environ.get("TAGJAX_HUGE_PAGES", "1") == "0" or TUNABLE in environ.get("GLIBC_TUNABLES", ""):
        return False
    version = _glibc_version()
    return (sys.platform == "linux" and version is not None
            and version >= _FIRST_GLIBC_WITH_TUNABLE and _granted_on_request())


def environment_with_huge_pages(environ=os.environ) -> dict[str, str]:
    """`environ` with the tunable added to `GLIBC_TUNABLES` (kept: the tunables already set)."""
    tunables = environ.get("GLIBC_TUNABLES")
    setting = f"{TUNABLE}=1"
    return {**environ, "GLIBC_TUNABLES": f"{tunables}:{setting}" if tunables else setting}


def is_a_tagjax_command(argv: list[str]) -> bool:
    """Whether `argv` (as `sys.orig_argv`) runs a tagjax command: `python -m tagjax[.NAME]`
    or the `tagjax` script."""
    if "-m" in argv[1:-1]:
        module = argv[argv.index("-m", 1) + 1]
        return module == "tagjax" or module.startswith("tagjax.")
    return len(argv) > 1 and os.path.basename(argv[1]) == "tagjax"


def reexecute_with_huge_pages() -> None:
    """Replaces this process by the same command line (`sys.orig_argv`) under the tunable where
    `would_reexecute()`; otherwise returns. Call it before any real work: nothing done in this
    process survives."""
    if not would_reexecute():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]],
              environment_with_huge_pages())

