"""Tagging throughput of the pretrained musicnn/VGG models against the original TensorFlow graphs.

    python benchmarks/pretrained_throughput.py [--model musicnn-mtt] [--folder DIR]
        [--wheel musicnn-0.1.0-py3-none-any.whl] [--repeats 3] [--out JSON]

Figures are seconds of audio per second (a 187-frame patch is 2.992 s of audio), medians of
`--repeats` runs, peers timed in turn within each repeat (the machine is shared), compilation
and graph loading apart:

- model, from log-mel patches (the network alone, batch 1 and 32): tagjax's jitted network
  against the original graph (`tools/musicnn_fixtures.py`: the wheel's `.meta` and checkpoint)
  in a TensorFlow session, on the same patches;
- model, from audio (batch 1 and 32): tagjax's whole forward pass from raw audio chunks (STFT,
  mel, network, probabilities and embedding); the original has no such path;
- end to end over a folder (decode to tags): `tj.Tagger.pretrained(...).predict` against the
  original extractor's path (`musicnn.extractor`: `librosa.load`, librosa's mel spectrogram,
  then the graph one patch at a time as its `BATCH_SIZE = 1` does, and batched by 32).

The TensorFlow columns need `pip install tensorflow-cpu librosa` and the musicnn wheel
(`pip download --no-deps musicnn==0.1.0`); without them only tagjax is timed. The folder
defaults to the one `benchmarks/tag_throughput.py` makes (multi-minute recordings in five
formats and three broken files, which both sides must skip).
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tools"))

RESULTS = os.path.join(HERE, "results")
PATCH_SECONDS = 187 * 256 / 16000


def _interleaved(timed: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each callable, the callables run in turn in every repeat."""
    times = {name: [] for name in timed}
    for _ in range(repeats):
        for name, fn in timed.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _original_graph(wheel: str | None, model: str, tmp: str):
    """The original graph of `model`, or None (and why) when TensorFlow or the wheel is
    missing."""
    if wheel is None:
        return None, "no --wheel given"
    try:
        import musicnn_fixtures
        import tensorflow  # noqa: F401
    except ImportError as error:
        return None, f"TensorFlow not installed ({error})"
    import zipfile

    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp)
    folder = musicnn_fixtures.MODELS[model.replace("-", "_")]
    architecture = "musicnn" if model.startswith("musicnn") else "vgg"
    return musicnn_fixtures.OriginalGraph(os.path.join(tmp, "musicnn", folder),
                                          architecture), "musicnn 0.1.0 graph"


def _files(folder: str) -> list[str]:
    from tagjax import tag

    return tag.find_audio_files([folder])


def original_extractor(graph, files: list[str], batch: int) -> tuple[float, int]:
    """The released extractor's path over `files`: seconds of audio tagged, files skipped."""
    import librosa
    import musicnn_fixtures

    seconds, skipped = 0.0, 0
    for path in files:
        try:
            audio, _ = librosa.load(path, sr=16000)
        except Exception:  # the extractor has no error handling: count and go on
            skipped += 1
            continue
        # float32 where the extractor casts to float16 (which overflows on loud music).
        patches = musicnn_fixtures.patches(musicnn_fixtures.extractor_log_mel(audio))
        for start in range(0, len(patches), batch):
            graph(patches[start:start + batch])
        seconds += len(audio) / 16000
    return seconds, skipped


def time_models(network_fn, audio_fn, variables, graph, batch: int, chunk_samples: int,
                repeats: int) -> dict:
    """One row: the network from log-mel and the model from audio at `batch`, and the graph."""
    import jax

    rng = np.random.default_rng(batch)
    # The values do not matter for speed; the shapes do.
    log_mel = rng.uniform(0, 3, (batch, 187, 96)).astype(np.float32)
    audio = rng.uniform(-0.5, 0.5, (batch, chunk_samples)).astype(np.float32)
    start = time.perf_counter()
    jax.block_until_ready(network_fn(variables, log_mel))
    compile_network = time.perf_counter() - start
    start = time.perf_counter()
    jax.block_until_ready(audio_fn(variables, audio))
    compile_audio = time.perf_counter() - start
    calls = max(1, 64 // batch)
    timed = {
        "tagjax network": lambda: [jax.block_until_ready(network_fn(variables, log_mel))
                                   for _ in range(calls)],
        "tagjax from audio": lambda: [jax.block_until_ready(audio_fn(variables, audio))
                                      for _ in range(calls)],
    }
    if graph is not None:
        graph(log_mel)  # the first run sets the session up
        timed["original graph"] = lambda: [graph(log_mel) for _ in range(calls)]
    seconds = _interleaved(timed, repeats)
    speeds = {name: calls * batch * PATCH_SECONDS / s for name, s in seconds.items()}
    row = {"stage": f"model, batch {batch}",
           **{f"{name} (audio s/s)": speed for name, speed in speeds.items()},
           "tagjax compile network (s)": compile_network,
           "tagjax compile from audio (s)": compile_audio}
    if graph is not None:
        row["ratio network"] = speeds["tagjax network"] / speeds["original graph"]
        row["ratio from audio"] = speeds["tagjax from audio"] / speeds["original graph"]
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="musicnn-mtt")
    parser.add_argument("--folder", default=os.path.join(RESULTS, "tag_folder"))
    parser.add_argument("--wheel", help="musicnn-0.1.0-py3-none-any.whl, for the TF peer")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--end-to-end-repeats", type=int, default=1)
    parser.add_argument("--workers", type=int, default=None,
                        help="tagjax's decoding threads (default: the Tagger's, up to 4)")
    parser.add_argument("--out", default=os.path.join(RESULTS, "pretrained_throughput.json"))
    args = parser.parse_args(argv)

    import jax

    import tagjax as tj
    from tagjax import tag, xla_options

    if not os.path.isdir(args.folder):
        import tag_throughput

        print(f"making {args.folder} ...", file=sys.stderr)
        tag_throughput.make_folder(args.folder)
    files = _files(args.folder)
    backend = jax.default_backend()
    device = jax.devices()[0].device_kind
    rows, report = [], {"model": args.model, "backend": backend, "device": device,
                        "cpu": platform.processor() or platform.machine(),
                        "cpu_count": os.cpu_count(), "folder": args.folder,
                        "files": len(files), "jax": jax.__version__}

    with tempfile.TemporaryDirectory() as tmp:
        graph, peer = _original_graph(args.wheel, args.model, tmp)
        report["peer"] = peer
        model, variables, info = tj.models.pretrained.load(args.model)
        variables = jax.device_put(variables)

        def network(module, log_mel):
            summary = module.summary(module.frontend.network(log_mel, train=False), train=False)
            return jax.nn.sigmoid(module.head(summary, train=False))

        network_fn = xla_options.jit(lambda v, x: model.apply(v, x, method=network))
        audio_fn = tag.compiled_forward(model)
        for batch in (1, 32):
            rows.append(time_models(network_fn, audio_fn, variables, graph, batch,
                                    info.chunk_samples, args.repeats))

        # End to end over the folder.
        batch_size = tag.default_batch_size()
        tagger = tj.Tagger.pretrained(args.model, batch_size=batch_size, workers=args.workers)
        list(tagger.predict(files[:1]))  # compile

        def run_tagjax():
            seconds, failed = 0.0, 0
            for result in tagger.predict(files):
                if isinstance(result, tag.TrackFailure):
                    failed += 1
                else:
                    seconds += result.duration
            run_tagjax.result = (seconds, failed)

        timed = {"tagjax Tagger.predict": run_tagjax}
        if graph is not None:
            for b in (1, 32):
                def run_original(b=b):
                    run_original.result = original_extractor(graph, files, b)
                timed[f"original extractor, batch {b}"] = run_original
        seconds = _interleaved(timed, args.end_to_end_repeats)
        audio_seconds, failed = run_tagjax.result
        row = {"stage": f"end to end, {len(files)} files ({audio_seconds / 60:.1f} min), "
                        f"tagjax batch {batch_size}, {tagger.workers} decoding threads",
               "failed files (tagjax)": failed}
        for name, s in seconds.items():
            row[f"{name} (audio s/s)"] = audio_seconds / s
        if graph is not None:
            for b in (1, 32):
                row[f"ratio vs original batch {b}"] = (
                    seconds[f"original extractor, batch {b}"] / seconds["tagjax Tagger.predict"])
        rows.append(row)

    report["rows"] = rows
    for row in rows:
        print(f"\n{row['stage']}")
        for key, value in row.items():
            if key != "stage":
                print(f"  {key:<42} {value:>12.2f}" if isinstance(value, float)
                      else f"  {key:<42} {value:>12}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
