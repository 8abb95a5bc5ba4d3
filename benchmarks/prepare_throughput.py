"""Data set preparation throughput: Apache Beam's DirectRunner against `DecodePool`.

All build the same `folder` data set (generated mp3 clips like MTG-Jamendo's: 44.1 kHz stereo,
decoded, resampled to 16 kHz mono and written as ArrayRecord by TFDS) with the same number of
worker processes: through the local path (`DecodePool`); as a Beam build on the DirectRunner
(`beam_options=""`: `--direct_running_mode=multi_processing`, its workers decode, TFDS's local
writer writes); and, with `--tfds_writer`, as a cluster runner builds it, TFDS's Beam writer
writing on the workers (`--experiments=tfds_beam_writer`). Each is timed on a few clips and on
many, the methods and sizes alternating, `--repeats` times, the fastest of each kept (the
machine is shared): the table gives the whole build's clips/s, the clips/s between the two sizes
(the rate once started), the fixed cost (starting the workers; for Beam also building its graph)
and the CPU time of all the build's processes (the least of the repeats), in all and per clip
once started (the difference between the sizes, which the load of a shared machine changes less
than the wall-clock rate). The builds' examples are checked to be identical. Encoding mp3s takes
longer than decoding them, so `--unique` clips are encoded and the others are hard links to them
(decoded all the same).

    pip install -e ".[beam]"
    python benchmarks/prepare_throughput.py [--clips 96] [--small 12] [--unique 24]
        [--seconds 20] [--workers 2] [--repeats 2] [--tfds_writer]
        [--out benchmarks/results/prepare_throughput.json]
"""

import argparse
import json
import os
import platform
import resource
import shutil
import tempfile
import time

import numpy as np
import soundfile

from tagjax.data import get_builder

SAMPLE_RATE = 44100  # MTG-Jamendo's mp3s


def _clip(seconds: float, seed: int) -> np.ndarray:
    """`(frames, 2)` float32: a few decaying partials and some noise, like a short piece."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    x = sum(np.sin(2 * np.pi * f * t) * np.exp(-((t * 2) % 1.0) * 3) / (k + 1)
            for k, f in enumerate(rng.uniform(80, 2000, 6)))
    x = 0.2 * x + 0.02 * rng.standard_normal(len(t))
    return np.stack([x, np.roll(x, 37)], axis=1).astype(np.float32)


def _write_folder(root: str, clips: int, unique: int, seconds: float,
                  sizes: list[int]) -> dict[int, str]:
    """`clips` mp3 files (`unique` encoded, the others hard links to them) and, per size, a CSV
    listing the first `size` of them."""
    for i in range(clips):
        path = os.path.join(root, f"{i:05d}.mp3")
        if i < unique:
            soundfile.write(path, _clip(seconds, i), SAMPLE_RATE, format="MP3")
        else:
            os.link(os.path.join(root, f"{i % unique:05d}.mp3"), path)
    csvs = {}
    for size in sizes:
        csvs[size] = os.path.join(root, f"tags-{size}.csv")
        with open(csvs[size], "w") as file:
            file.write("path,tags\n")
            file.writelines(f"{i:05d}.mp3,{'odd' if i % 2 else 'even'}\n" for i in range(size))
    return csvs


# The methods: their names and `beam_options` ("": the DirectRunner in `workers` processes).
METHODS = {"DecodePool": None, "Beam DirectRunner": "",
           "Beam DirectRunner, TFDS's Beam writer": "--experiments=tfds_beam_writer"}


def _cpu_seconds() -> float:
    """User and system time of this process and of its children that have ended."""
    return sum(usage.ru_utime + usage.ru_stime for usage in
               (resource.getrusage(resource.RUSAGE_SELF),
                resource.getrusage(resource.RUSAGE_CHILDREN)))


def _build(root, csv_path, data_dir, workers, beam_options):
    """The builder, the seconds its build took, and their CPU seconds in all its processes."""
    kwargs = {} if beam_options is None else {"beam_options": beam_options}
    start, cpu = time.perf_counter(), _cpu_seconds()
    builder = get_builder("folder", directory=root, csv_path=csv_path, data_dir=data_dir,
                          decode_workers=workers, **kwargs)
    return builder, time.perf_counter() - start, _cpu_seconds() - cpu


def _examples(builder) -> dict:
    source = builder.as_data_source()["train"]
    return {source[i]["id"]: source[i]["audio"] for i in range(len(source))}


def _table(result: dict) -> str:
    """The result as a Markdown table, with what was measured above it."""
    small, clips = result["small"], result["clips"]
    workers = result["rows"][0]["workers"]
    lines = [f"{clips} clips of {result['clip_seconds']:g} s ({result['clip_format']}), "
             f"{workers} worker processes, fastest of {result['repeats']}; identical examples: "
             f"{result['identical_examples']}; "
             f"load average at the end {result['machine']['load_average_at_end'][0]:.1f} on "
             f"{result['machine']['cpus']} CPUs", "",
             f"| method | {small} clips (s) | {clips} clips (s) | clips/s (whole build) "
             f"| clips/s (once started) | fixed cost (s) "
             f"| CPU s (all processes), {small} / {clips} clips | CPU ms per clip once started |",
             "|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        lines.append(f"| {row['method']} | {row['seconds'][str(small)]} | "
                     f"{row['seconds'][str(clips)]} | {row['clips_per_s']} | "
                     f"{row['steady_clips_per_s'] or 'n/a'} | {row['fixed_cost_s'] or 'n/a'} | "
                     f"{row['cpu_s'][str(small)]} / {row['cpu_s'][str(clips)]} | "
                     f"{1000 * row['steady_cpu_s_per_clip']:.0f} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=96)
    parser.add_argument("--small", type=int, default=12, help="clips of the small build")
    parser.add_argument("--unique", type=int, default=24, help="clips encoded (see above)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tfds_writer", action="store_true",
                        help="also time TFDS's Beam writer on the DirectRunner (slow)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "prepare_throughput.json"))
    args = parser.parse_args()
    os.environ.pop("TAGJAX_BEAM_OPTIONS", None)
    sizes = [args.small, args.clips]
    methods = [m for m in METHODS if args.tfds_writer or "TFDS" not in m]

    times = {(m, size): [] for m in methods for size in sizes}
    cpu = {(m, size): [] for m in methods for size in sizes}
    examples = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "clips")
        os.makedirs(root)
        csvs = _write_folder(root, args.clips, args.unique, args.seconds, sizes)
        for repeat in range(args.repeats):
            for size in sizes:
                for method in methods:  # alternating, so a change of load hits all alike
                    data_dir = os.path.join(tmp, "tfds")
                    builder, seconds, cpu_seconds = _build(root, csvs[size], data_dir,
                                                           args.workers, METHODS[method])
                    times[method, size].append(seconds)
                    cpu[method, size].append(cpu_seconds)
                    if size == args.clips and repeat == 0:
                        examples[method] = _examples(builder)
                    shutil.rmtree(data_dir)
                    print(f"{method}, {size} clips: {seconds:.2f} s", flush=True)
    expected = examples["DecodePool"]
    identical = all(
        set(got) == set(expected) and all(np.array_equal(got[k], expected[k]) for k in expected)
        for got in examples.values())

    rows = []
    small, large = sizes
    for method in methods:
        best = {size: min(times[method, size]) for size in sizes}
        least_cpu = {size: min(cpu[method, size]) for size in sizes}
        # The rate between the two sizes; none when the difference is lost in the noise.
        extra = best[large] - best[small]
        steady = (large - small) / extra if extra > 0 else None
        rows.append({
            "method": method,
            "beam_options": METHODS[method],
            "workers": args.workers,
            "seconds": {str(size): round(best[size], 2) for size in sizes},
            "all_seconds": {str(size): [round(t, 2) for t in times[method, size]]
                            for size in sizes},
            "clips_per_s": round(large / best[large], 2),
            "steady_clips_per_s": None if steady is None else round(steady, 2),
            "fixed_cost_s": None if steady is None else round(best[small] - small / steady, 2),
            "cpu_s": {str(size): round(least_cpu[size], 2) for size in sizes},
            # The CPU time of a clip once started: robust to the load of a shared machine.
            "steady_cpu_s_per_clip": round((least_cpu[large] - least_cpu[small]) / (large - small),
                                           4),
        })

    result = {
        "clips": args.clips, "small": args.small, "unique_clips": args.unique,
        "clip_seconds": args.seconds, "repeats": args.repeats,
        "clip_format": f"mp3, {SAMPLE_RATE} Hz stereo -> 16 kHz mono int16",
        "identical_examples": identical, "rows": rows,
        "machine": {"cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(),
                    "python": platform.python_version()},
    }
    table = _table(result)
    print("\n" + table)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as file:
        json.dump(result, file, indent=2)
    with open(os.path.splitext(args.out)[0] + ".md", "w") as file:
        file.write(table)
    print(f"\nwritten to {args.out} and its .md")


if __name__ == "__main__":
    main()
