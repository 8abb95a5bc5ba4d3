"""Where a config's training step spends its time, operation by operation: a `jax.profiler`
trace of the compiled step, read back.

    python benchmarks/op_timeline.py [--config short_res] [--batch 16] [--steps 4] [--top 30]
        [--out benchmarks/results/op_timeline_<config>.json]

The step is the trainer's (`train_step.compiled_step`), warmed up, then traced for `--steps`
steps; every figure is per step. Tracing costs time per operation: a step of a few large
operations (short_res) keeps its untraced time, one of many small ones (an LSTM's loop) does
not, and both times are printed. For each XLA operation the step runs (one thunk: a YNNPACK
convolution or dot, an XLA dot, a loop fusion) the tables give:

- **wall**: its duration on the worker thread that ran it;
- **alone**: the part of that during which no other worker thread ran a traced operation.
  YNNPACK's and Eigen's helpers (the other core working on the same operation) leave no trace
  event, so "alone" bounds the time a core idled from above, and the step's CPU time (printed
  with its untraced time) says how much of the span both cores worked;
- **layer**: the model path in the HLO's metadata (`frontend/block0/conv2`), forward or
  backward.

Then the same per layer, and the step's span against the time each worker thread spent in
operations: on 2 cores a step bound by arithmetic keeps both near its span.

What the trace does not show: XLA's matrix products (dot thunks: Eigen packing the operands for
oneDNN's sgemm) return as soon as their work is queued, so their rows hold the launch alone
(short_res's 18 kernel-gradient products of block 0's conv2, about 35 GFLOP, show 1 ms); the
work itself runs on the worker threads under whichever operations are traced meanwhile, which
then look slower than they are alone. `cpu_profile.py` (samples of every thread) sees it.
"""

import argparse
import bisect
import collections
import json
import os
import re
import statistics
import tempfile
from pathlib import Path

import jax
from machine import cpu_description
from train_step import check_configs, compiled_step, timed_steps

from tagjax import allocator

# Trace events that wrap operations rather than being one (the executor, the dispatch from
# Python), and the wait of a YNNPACK call for its helper threads.
_WRAPPERS = ("ThunkExecutor::", "PjRt", "TfrtCpu", "PjitFunction", "$")
_WAIT = "SlinkyThreadPool::Await"
_STEP = "op_timeline step"
_WORKER_THREAD = "tf_XLAEigen"
_METADATA = re.compile(r'^\s*(?:ROOT )?%([\w.\-]+) = .*?metadata=\{op_name="([^"]*)"')
_KIND = re.compile(r'"kind":"(__\w+)"')


def op_layers(hlo_text: str) -> dict:
    """{instruction name: (layer path, "forward" | "backward", kind)} from the compiled HLO's
    metadata; the layer path drops JAX's transformation wrappers (`jvp(...)`,
    `transpose(...)`) and the `TaggingModel.*` method scopes."""
    layers = {}
    for line in hlo_text.splitlines():
        match = _METADATA.match(line)
        if not match:
            continue
        name, op_name = match.groups()
        parts = [part for part in op_name.split("/")
                 if not part.startswith(("jit(", "jvp(", "transpose(", "TaggingModel"))]
        kind = _KIND.search(line)
        layers[name] = ((("/".join(parts[:-1]) or parts[-1]) if parts else op_name),
                        "backward" if "transpose(" in op_name else "forward",
                        kind.group(1).strip("_") if kind else "")
    return layers


def trace_events(trace_dir: str) -> list[tuple[str, str, int, int]]:
    """`(thread, event name, start ns, end ns)` of every event of the trace."""
    [path] = Path(trace_dir).rglob("*.xplane.pb")
    profile = jax.profiler.ProfileData.from_file(str(path))
    return [(line.name, event.name, event.start_ns, event.start_ns + event.duration_ns)
            for plane in profile.planes for line in plane.lines for event in line.events]


def alone_time(ops: list[tuple[str, str, int, int]]) -> list[int]:
    """For each op `(thread, name, start, end)`, the ns of it during which no op of another
    thread ran (a sweep over every op's start and end)."""
    edges = sorted([(start, 1, thread) for thread, _, start, _ in ops]
                   + [(end, -1, thread) for thread, _, _, end in ops])
    running = collections.Counter()
    alone_spans = []  # (start, end, thread): exactly one thread is in an op
    last = None
    for edge, change, thread in edges:
        busy = [t for t, n in running.items() if n > 0]
        if last is not None and edge > last and len(busy) == 1:
            alone_spans.append((last, edge, busy[0]))
        running[thread] += change
        last = edge
    # The spans follow one another without overlap: each op's are found by bisection.
    starts = [span_start for span_start, _, _ in alone_spans]
    result = []
    for thread, _, start, end in ops:
        alone_ns = 0
        i = max(bisect.bisect_right(starts, start) - 1, 0)
        while i < len(alone_spans) and alone_spans[i][0] < end:
            span_start, span_end, span_thread = alone_spans[i]
            if span_thread == thread:
                alone_ns += max(0, min(end, span_end) - max(start, span_start))
            i += 1
        result.append(alone_ns)
    return result


def timeline(config: str, batch: int, steps: int, warmup: int = 5) -> dict:
    """Time `steps` steps of `config` after `warmup`, then trace as many; per-step figures in
    ms."""
    compiled, state, batches, _, _ = compiled_step(config, batch)
    state, _, _ = timed_steps(compiled, state, batches, warmup)
    state, untraced, cpu = timed_steps(compiled, state, batches, steps)
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir):
            for i in range(steps):
                with jax.profiler.TraceAnnotation(_STEP):
                    state, metrics = compiled(state, batches[i % 2])
                    jax.block_until_ready(metrics)
        every_event = trace_events(trace_dir)
    step_ns = [end - start for _, name, start, end in every_event if name == _STEP]
    events = [e for e in every_event if e[0].startswith(_WORKER_THREAD)]
    if not events:
        raise SystemExit("the trace holds no XLA worker-thread events; this script reads "
                         "XLA:CPU traces")
    layers = op_layers(compiled.as_text())
    ops = [e for e in events if not e[1].startswith(_WRAPPERS) and e[1] != _WAIT]
    alone = alone_time(ops)
    per_op = {}
    for (_, name, start, end), alone_ns in zip(ops, alone, strict=True):
        row = per_op.setdefault(name, dict(op=name, wall_ms=0.0, alone_ms=0.0, calls=0))
        row["wall_ms"] += (end - start) / 1e6 / steps
        row["alone_ms"] += alone_ns / 1e6 / steps
        row["calls"] += 1
    per_layer = {}
    for row in per_op.values():
        layer, direction, kind = layers.get(row["op"], ("(no metadata)", "", ""))
        row.update(layer=layer, direction=direction, kind=kind, calls=row["calls"] // steps)
        total = per_layer.setdefault((layer, direction),
                                     dict(layer=layer, direction=direction, wall_ms=0.0,
                                          alone_ms=0.0, ops=0))
        total["wall_ms"] += row["wall_ms"]
        total["alone_ms"] += row["alone_ms"]
        total["ops"] += 1
    threads = collections.Counter()
    for thread, _, start, end in ops:
        threads[thread] += (end - start) / 1e6 / steps
    waits = sum(end - start for _, name, start, end in events if name == _WAIT) / 1e6 / steps
    return dict(config=config, batch=batch, steps=steps,
                untraced_step_ms=1e3 * statistics.median(untraced),
                untraced_cpu_ms=1e3 * statistics.median(cpu),
                span_ms=statistics.median(step_ns) / 1e6,
                op_ms_per_thread=sorted(threads.values(), reverse=True),
                alone_ms=sum(alone) / 1e6 / steps, ynn_wait_ms=waits,
                ops=sorted(per_op.values(), key=lambda r: -r["wall_ms"]),
                layers=sorted(per_layer.values(), key=lambda r: -r["wall_ms"]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="short_res")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4,
                        help="steps timed, then as many traced (after 5 warm-up steps)")
    parser.add_argument("--top", type=int, default=30, help="rows of each table")
    parser.add_argument("--out", type=Path, help="JSON (default "
                        "benchmarks/results/op_timeline_<config>.json)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.top < 1:
        raise SystemExit("--steps and --top take a positive number")
    check_configs([args.config])
    out = args.out or Path(__file__).parent / "results" / f"op_timeline_{args.config}.json"
    result = timeline(args.config, args.batch, args.steps)

    per_thread = ", ".join(f"{t:.1f}" for t in result["op_ms_per_thread"])
    print(f"{args.config}, batch {args.batch}: step {result['untraced_step_ms']:.1f} ms "
          f"untraced (CPU time {result['untraced_cpu_ms']:.1f} ms), {result['span_ms']:.1f} ms "
          f"traced; ops on each worker thread {per_thread} ms; one thread alone in an op "
          f"{result['alone_ms']:.1f} ms; YNNPACK callers waiting for helpers "
          f"{result['ynn_wait_ms']:.1f} ms")
    print(f"\n{'wall ms':>8} {'alone ms':>8} {'calls':>5}  {'op':<28} {'kind':<12} layer")
    for row in result["ops"][:args.top]:
        print(f"{row['wall_ms']:8.1f} {row['alone_ms']:8.1f} {row['calls']:5d}  "
              f"{row['op'][:28]:<28} {row['kind'][:12]:<12} {row['layer']} ({row['direction']})")
    print(f"\n{'wall ms':>8} {'alone ms':>8} {'ops':>5}  layer")
    for row in result["layers"][:args.top]:
        print(f"{row['wall_ms']:8.1f} {row['alone_ms']:8.1f} {row['ops']:5d}  {row['layer']} "
              f"({row['direction']})")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(
        environment=dict(cpu=cpu_description(), cpus=os.cpu_count(), jax=jax.__version__,
                         allocator=allocator.in_effect()),
        **result), indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    # The step runs under the allocator of tagjax's commands (tagjax/allocator.py): with glibc's
    # defaults page faults dominate some operations (an XLA convolution of short_res took 209
    # ms instead of 10).
    allocator.reexecute()
    main()
