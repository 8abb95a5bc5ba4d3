"""The memory allocator of tagjax's commands: a command re-executes itself once with mimalloc
preloaded, keeping the memory it frees, or else under glibc's huge-page tunable.

XLA's CPU runtime allocates a program's temporaries afresh on every call (a training step's
can be hundreds of MB: 391 MB for `fcn`). glibc serves an allocation over 32 MiB (its largest
mmap threshold) with new memory, which the kernel faults in and zeroes on every call. Two
remedies, measured with benchmarks/train_step.py on a 2-core AMD EPYC (idle, medians):

- `mimalloc`: mimalloc (the `cmeel-mimalloc` wheel, a dependency on Linux) with
  `MIMALLOC_PURGE_DELAY=-1` keeps freed memory mapped, so each call reuses the last call's
  pages. Against the huge pages below, alternated: `cnn_lstm`'s step 61.1 -> 51.5 ms, `fcn`'s
  184 -> 169, `short_res`'s 1060 -> 977. The price is memory, held for reuse: peak resident
  memory 1.34 against 1.07 GB (`cnn_lstm`), 4.6 against 2.9 GB (`short_res`, 25 steps).
- `huge-pages`: glibc's `glibc.malloc.hugetlb=1` tunable, under which malloc asks for
  transparent huge pages (2 MiB), which the kernel grants on request where
  /sys/kernel/mm/transparent_hugepage/enabled says `[madvise]` (the usual default). Against
  glibc's defaults: `cnn_lstm`'s step 313 -> 201 ms (on an earlier machine).

The dynamic loader reads `LD_PRELOAD`, and glibc its tunables, only when a process starts,
hence the re-execution. `TAGJAX_ALLOCATOR` chooses: `mimalloc` (the default where it is
installed), `huge-pages` (the default otherwise, on Linux with glibc 2.35 or newer) or
`system` (no re-execution). Your own programs get the same when started under
`allocator.environment()` (see the README).
"""

import functools
import os
import sys

VARIABLE = "TAGJAX_ALLOCATOR"
CHOICES = ("mimalloc", "huge-pages", "system")
TUNABLE = "glibc.malloc.hugetlb"
_THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"
_FIRST_GLIBC_WITH_TUNABLE = (2, 35)
# Never give freed memory back to the system (mimalloc's default: 10 ms after the free).
_MIMALLOC_SETTINGS = {"MIMALLOC_PURGE_DELAY": "-1"}


@functools.cache
def mimalloc_path() -> str | None:
    """The mimalloc shared library of the installed `cmeel-mimalloc` wheel, or None (not
    Linux, or not installed)."""
    if sys.platform != "linux":
        return None
    from importlib import metadata
    try:
        files = metadata.distribution("cmeel-mimalloc").files or []
    except metadata.PackageNotFoundError:
        return None
    libraries = sorted((file for file in files if file.name.startswith("libmimalloc.so")),
                       key=lambda file: len(file.name))
    path = str(libraries[0].locate()) if libraries else None
    return path if path and os.path.isfile(path) else None


def _glibc_version() -> tuple[int, ...] | None:
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # "glibc 2.36"
        return tuple(int(part) for part in version.split(".")[:2]) if name == "glibc" else None
    except (AttributeError, ValueError, OSError):  # not glibc, or not a POSIX system
        return None


def _huge_pages_granted() -> bool:
    """glibc has the tunable and the kernel grants huge pages on request."""
    version = _glibc_version()
    if sys.platform != "linux" or version is None or version < _FIRST_GLIBC_WITH_TUNABLE:
        return False
    try:
        with open(_THP_MODE) as mode:
            return "[madvise]" in mode.read()
    except OSError:
        return False


def _available(choice: str) -> bool:
    return {"mimalloc": lambda: mimalloc_path() is not None, "huge-pages": _huge_pages_granted,
            "system": lambda: True}[choice]()


def chosen(environ=os.environ) -> str:
    """The allocator `TAGJAX_ALLOCATOR` asks for, else the best one available; one of
    `CHOICES`. Asked for and not available, or not one of them: `system`, after one line on
    standard error."""
    default = next(choice for choice in CHOICES if _available(choice))
    choice = environ.get(VARIABLE, default)
    if choice not in CHOICES:
        print(f"tagjax: {VARIABLE}={choice!r} is not one of {', '.join(CHOICES)}; running "
              f"with the system's malloc (unset it for the default, {default})",
              file=sys.stderr)
        return "system"
    if choice != default and not _available(choice):
        print(f"tagjax: {VARIABLE}={choice} is not available here; running with the system's "
              f"malloc (unset it for the default, {default})", file=sys.stderr)
        return "system"
    return choice


def environment(environ=os.environ, choice: str | None = None) -> dict[str, str]:
    """`environ` with the variables of allocator `choice` (default `chosen(environ)`) added:
    `LD_PRELOAD` gets mimalloc first, `GLIBC_TUNABLES` the huge-page tunable; those already
    set are kept, and so are mimalloc's settings where set."""
    choice = chosen(environ) if choice is None else choice
    if choice == "mimalloc":
        preloaded = environ.get("LD_PRELOAD")
        library = mimalloc_path()
        return {**_MIMALLOC_SETTINGS, **environ,
                "LD_PRELOAD": f"{library}:{preloaded}" if preloaded else library}
    if choice == "huge-pages":
        tunables = environ.get("GLIBC_TUNABLES")
        setting = f"{TUNABLE}=1"
        return {**environ, "GLIBC_TUNABLES": f"{tunables}:{setting}" if tunables else setting}
    return dict(environ)


def _in_effect(choice: str, environ) -> bool:
    if choice == "mimalloc":
        return mimalloc_path() in environ.get("LD_PRELOAD", "").replace(" ", ":").split(":")
    if choice == "huge-pages":
        return TUNABLE in environ.get("GLIBC_TUNABLES", "")
    return True


def would_reexecute(environ=os.environ) -> bool:
    """Whether `reexecute()` would re-execute: the chosen allocator is not yet in effect."""
    return not _in_effect(chosen(environ), environ)


def is_a_tagjax_command(argv: list[str]) -> bool:
    """Whether `argv` (as `sys.orig_argv`) runs a tagjax command: `python -m tagjax[.NAME]`
    or the `tagjax` script."""
    if "-m" in argv[1:-1]:
        module = argv[argv.index("-m", 1) + 1]
        return module == "tagjax" or module.startswith("tagjax.")
    return len(argv) > 1 and os.path.basename(argv[1]) == "tagjax"


def reexecute() -> None:
    """Replaces this process by the same command line (`sys.orig_argv`) under the chosen
    allocator where `would_reexecute()`; otherwise returns. Call it before any real work:
    nothing done in this process survives."""
    choice = chosen()
    if _in_effect(choice, os.environ):
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]],
              environment(os.environ, choice))


def in_effect(environ=os.environ) -> str:
    """The allocator that `environ` (this process's, set when it started) puts in effect: one
    of `CHOICES`."""
    # The first that is set up; "system" always is.
    return next(choice for choice in CHOICES if _in_effect(choice, environ))
