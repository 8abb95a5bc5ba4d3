"""Clips per second of the jitted training step of each config, compile time apart.

The step is `tagjax.train.make_train_step` as the trainer runs it (log-mel or MFCC inside,
forward, binary cross-entropy, backward, AdamW update, batch statistics), on batches of random
crops at the config's crop length. The input pipeline's rate (`benchmarks/input_pipeline.py`)
is printed beside it when its JSON exists, so the two can be compared: the pipeline should
deliver more clips per second than the step consumes.

    python benchmarks/train_step.py [--configs cnn_lstm,mfcc_lstm] [--batch 16] [--repeats 10]
        [--out benchmarks/results/train_step.json]

`--configs` takes what `--config` takes (`tagjax.configs.get`): `cnn_lstm:tiny` times the tiny
variant, a smoke test of the benchmark.
"""

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from tagjax import allocator, configs, train, xla_options
from tagjax.usage import UsageError

CONFIGS = ("cnn_lstm", "cnn_bof", "mfcc_lstm", "mfcc_bof", "fcn", "crnn", "short_res")
NUM_TAGS = 32  # the synth data set's


def compiled_step(name: str, batch: int):
    """The trainer's jitted step of config `name` (`tagjax.train.make_train_step`), compiled.

    Returns:
      `(compiled, state, batches, compile_s, config)`: `compiled(state, batch) -> (state,
      metrics)` donates its state; `batches` are two random batches at the config's crop length.
    """
    config = configs.get(name)
    config.batch_size = batch
    model = train.tj_models.build(train._model_config(config, NUM_TAGS))

    # The trainer's initial state; a bag-of-frames codebook is left unfitted (its cost per step
    # does not depend on the centroids' values).
    variables = train.initial_variables(model, config)
    tx = train._optimizer(config, steps_per_epoch=100, params=variables["params"])
    state = train.create_state(config, tx, variables)
    step = xla_options.jit(train.make_train_step(model, tx), donate_argnums=0)
    rng = np.random.default_rng(0)
    crop = train._crop_samples(config)
    batches = [{"audio": jnp.asarray(0.1 * rng.standard_normal((batch, crop), np.float32)),
                "labels": jnp.asarray(rng.integers(0, 2, (batch, NUM_TAGS)).astype(np.float32))}
               for _ in range(2)]
    start = time.perf_counter()
    compiled = step.lower(state, batches[0]).compile()
    return compiled, state, batches, time.perf_counter() - start, config


def timed_steps(compiled, state, batches, n: int):
    """Steps 0 to n - 1 of `compiled_step`'s `compiled`, step `i` on `batches[i % 2]`.

    Returns:
      `(state, wall seconds, CPU seconds)` (every thread of this process), a step each.
    """
    times, cpu_times = [], []
    for i in range(n):
        start, cpu_start = time.perf_counter(), time.process_time()
        state, metrics = compiled(state, batches[i % 2])
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return state, times, cpu_times


def check_configs(names) -> None:
    """Exits with `tagjax.configs.get`'s one-line message for a name it does not know."""
    try:
        for name in names:
            configs.get(name)
    except UsageError as error:
        raise SystemExit(str(error)) from None


def time_config(name: str, batch: int, repeats: int) -> dict:
    compiled, state, batches, compile_s, config = compiled_step(name, batch)
    state, _, _ = timed_steps(compiled, state, batches, 1)  # warm-up
    state, times, _ = timed_steps(compiled, state, batches, repeats)
    median = statistics.median(times)
    return {"config": name, "batch": batch, "crop_seconds": config.crop_seconds,
            "compile_s": compile_s, "step_ms": 1000 * median,
            "clips_per_second": batch / median,
            "params": int(sum(x.size for x in jax.tree.leaves(state.params)))}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "train_step.json"))
    args = parser.parse_args(argv)
    check_configs(args.configs.split(","))
    rows = [time_config(name, args.batch, args.repeats) for name in args.configs.split(",")]

    pipeline_path = os.path.join(os.path.dirname(args.out), "input_pipeline.json")
    pipeline_rate = None
    if os.path.exists(pipeline_path):
        with open(pipeline_path) as f:
            pipeline = json.load(f)
        rates = [row.get("clips_per_s") for row in pipeline.get("pipeline", [])
                 if isinstance(row, dict) and row.get("clips_per_s")]
        pipeline_rate = min(rates) if rates else None

    device = jax.devices()[0]
    print(f"train step on {device.platform} ({device.device_kind}), batch {args.batch}, "
          f"median of {args.repeats}")
    print(f"{'config':<10} {'crop s':>6} {'params':>9} {'compile s':>9} {'step ms':>8} "
          f"{'clips/s':>8} {'pipeline/step':>13}")
    for row in rows:
        ratio = (f"{pipeline_rate / row['clips_per_second']:.1f}x" if pipeline_rate else "n/a")
        print(f"{row['config']:<10} {row['crop_seconds']:>6.2f} {row['params']:>9,} "
              f"{row['compile_s']:>9.1f} {row['step_ms']:>8.1f} {row['clips_per_second']:>8.1f} "
              f"{ratio:>13}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"device": str(device), "platform": platform.platform(),
                   "cpus": os.cpu_count(), "jax": jax.__version__,
                   "allocator": allocator.in_effect(),
                   "slowest_pipeline_clips_per_second": pipeline_rate, "results": rows}, f,
                  indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    # Both sides run under the allocator of tagjax's commands (tagjax/allocator.py).
    allocator.reexecute()
    main()
