"""What the CPU does during a config's training steps, by kind of code: Linux `perf` samples of
XLA's worker threads, grouped into YNNPACK kernels, Eigen's operand packing, JIT-compiled code
(oneDNN's sgemm kernels and XLA's fused loops), the kernel zeroing fresh pages, and the rest.

    python benchmarks/cpu_profile.py [--config short_res] [--batch 16] [--steps 10]
        [--frequency 999] [--out benchmarks/results/cpu_profile_<config>.json]

Needs `perf` (linux-tools / the `perf` package) allowed to sample this user's processes
(`/proc/sys/kernel/perf_event_paranoid` at 2 or below). The script runs the step in a child
process under `perf record` with the wall clock as perf's clock, and keeps only the samples taken
between the child's first and last timed step, so compilation and warm-up are left out.
`op_timeline.py` says which operation runs when; this says what the cores spend their cycles on,
including the work XLA's asynchronous matrix products do beside the traced operations.
"""

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_description
from train_step import check_configs, compiled_step, timed_steps

from tagjax import allocator

_WORKER_THREAD = "tf_XLAEigen"
# (group, test on the symbol and the object it was sampled in), first match wins.
_GROUPS = (
    ("YNNPACK kernels (convolutions, their dots, reductions)",
     lambda sym, dso: sym.startswith(("ynn::", "slinky::"))),
    ("Eigen packing matrix-product operands",
     lambda sym, dso: sym.startswith("Eigen::internal::gemm_pack")),
    ("JIT code (oneDNN sgemm kernels, XLA fused loops)",
     lambda sym, dso: "perf-" in dso or "[JIT]" in dso or sym in ("", "[unknown]")),
    ("kernel zeroing fresh pages",
     lambda sym, dso: sym.startswith(("clear_page", "folio_zero_user", "clear_huge_page"))),
    ("memmove / memset", lambda sym, dso: sym.startswith(("__memmove", "__memset", "__memcpy"))),
    ("other kernel code", lambda sym, dso: "kernel" in dso),
    ("other library code", lambda sym, dso: True),
)
_SAMPLE = re.compile(r"^\s*(\S+)\s+(\d+)\s+([\d.]+):\s+\S+\s+(.*)\((.*)\)\s*$")


def group_of(sym: str, dso: str) -> str:
    return next(name for name, test in _GROUPS if test(sym, dso))


def run_steps(config: str, batch: int, steps: int) -> None:
    """The child: compile and warm up, then print the wall-clock ns around `steps` steps."""
    compiled, state, batches, _, _ = compiled_step(config, batch)
    state, _, _ = timed_steps(compiled, state, batches, 3)
    start = time.time_ns()
    timed_steps(compiled, state, batches, steps)
    print(f"STEPS {start} {time.time_ns()}", flush=True)


def samples(perf_data: str) -> list[tuple[str, float, str, str]]:
    """`(thread name, time ns, symbol, object)` of every sample."""
    script = subprocess.run(["perf", "script", "-i", perf_data, "-F", "comm,tid,time,ip,sym,dso",
                             "--ns"], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in script.splitlines():
        match = _SAMPLE.match(line)
        if match:
            comm, _, seconds, sym, dso = match.groups()
            rows.append((comm, float(seconds) * 1e9, sym.strip(), dso))
    return rows


def profile(config: str, batch: int, steps: int, frequency: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        perf_data = os.path.join(tmp, "perf.data")
        child = subprocess.run(
            ["perf", "record", "-q", "-k", "CLOCK_REALTIME", "-F", str(frequency), "-o", perf_data,
             "--", sys.executable, __file__, "--child", "--config", config, "--batch", str(batch),
             "--steps", str(steps)], capture_output=True, text=True)
        marks = [line.split() for line in child.stdout.splitlines() if line.startswith("STEPS ")]
        if child.returncode != 0 or not marks:
            last_line = (child.stderr.strip().splitlines() or ["no message"])[-1]
            raise SystemExit(f"perf record of the step failed (exit status {child.returncode}): "
                             f"{last_line}")
        start, end = int(marks[0][1]), int(marks[0][2])
        rows = [row for row in samples(perf_data) if start <= row[1] <= end]
    worker = [row for row in rows if row[0].startswith(_WORKER_THREAD)]
    if not worker:
        raise SystemExit("perf recorded no samples of XLA's worker threads during the steps")
    ms_per_sample = 1e3 / frequency / steps
    groups, symbols = collections.Counter(), collections.Counter()
    for _, _, sym, dso in worker:
        group = group_of(sym, dso)
        groups[group] += 1
        symbols["(JIT code)" if group.startswith("JIT") else sym.split("(")[0][:90]] += 1
    return dict(config=config, batch=batch, steps=steps, frequency_hz=frequency,
                step_ms=(end - start) / 1e6 / steps,
                worker_cpu_ms=len(worker) * ms_per_sample,
                other_threads_cpu_ms=(len(rows) - len(worker)) * ms_per_sample,
                groups=[dict(group=name, share=n / len(worker), cpu_ms=n * ms_per_sample)
                        for name, n in groups.most_common()],
                symbols=[dict(symbol=name, share=n / len(worker), cpu_ms=n * ms_per_sample)
                         for name, n in symbols.most_common(15)])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="short_res")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10, help="steps sampled (after 3 warm-up)")
    parser.add_argument("--frequency", type=int, default=999, help="samples a second a thread")
    parser.add_argument("--out", type=Path, help="JSON (default "
                        "benchmarks/results/cpu_profile_<config>.json)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.frequency < 1:
        raise SystemExit("--steps and --frequency take a positive number")
    if args.child:
        run_steps(args.config, args.batch, args.steps)
        return
    check_configs([args.config])
    if shutil.which("perf") is None:
        raise SystemExit("this script samples with Linux perf: install it (Debian: apt install "
                         "linux-perf) and run it again")
    out = args.out or Path(__file__).parent / "results" / f"cpu_profile_{args.config}.json"
    result = profile(args.config, args.batch, args.steps, args.frequency)

    print(f"{args.config}, batch {args.batch}: {result['step_ms']:.1f} ms a step (under perf); "
          f"CPU time of XLA's worker threads {result['worker_cpu_ms']:.1f} ms a step, other "
          f"threads {result['other_threads_cpu_ms']:.1f} ms")
    print(f"\n{'share':>6} {'CPU ms':>8}  of XLA's worker threads, by kind of code")
    for row in result["groups"]:
        print(f"{100 * row['share']:5.1f}% {row['cpu_ms']:8.1f}  {row['group']}")
    print(f"\n{'share':>6} {'CPU ms':>8}  symbol")
    for row in result["symbols"]:
        print(f"{100 * row['share']:5.1f}% {row['cpu_ms']:8.1f}  {row['symbol']}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(
        environment=dict(cpu=cpu_description(), cpus=os.cpu_count(),
                         allocator=allocator.in_effect()),
        **result), indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    # The step runs under the allocator of tagjax's commands (tagjax/allocator.py; the child
    # inherits its environment).
    allocator.reexecute()
    main()
