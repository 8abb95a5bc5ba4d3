"""Where the time of the `cnn_lstm` training step goes, and what a change to it gains.

    python benchmarks/step_profile.py [--config cnn_lstm] [--batch 16] [--rounds 5]
        [--steps-per-round 4] [--out benchmarks/results/step_profile.json]

Tables of candidates, each timed in alternating rounds (the order rotating) so that a machine
shared with other work slows all of them alike; medians over all steps:

- **parts**: the step cut into the pieces a user can change: the log-mel front end alone
  (forward), the CNN front end forward and forward+backward, the temporal summary (LSTM)
  forward+backward on the front end's frames, the whole loss gradient, and the whole step
  (gradient + AdamW + schedule). XLA's own estimate of each part's floating-point operations
  and bytes (`cost_analysis()`) is printed beside it.
- **compiler options**: the whole step compiled with jaxlib's default options against
  tagjax's (`tagjax.xla_options`: convolutions by XLA's own multithreaded emitter on a CPU).
- **LSTM before/after**: the step with Flax's `OptimizedLSTMCell` inside `nn.RNN` (the input
  product computed at each of the 47 steps, as tagjax did before) against tagjax's
  `LSTMSummary` (the input product of all steps in one matmul before the scan).
- **CNN layers before/after** (Choi's CNN front ends: `cnn_lstm`, `fcn`, `crnn`, `cnn_bof`):
  the step with Flax's `Conv` and `BatchNorm` then pooling (as tagjax did before), with each of
  tagjax's three changes alone, and with all: the first layer's one-channel convolution taking
  `SingleChannelConv`'s gradient, `MaxPooledBatchNorm` normalising after pooling, and the other
  convolutions as `layers.Conv` (XLA's, but for output maps of up to 32 pixels: products of
  their patches; until 2026-12-01 its kernel gradients were per-tap matrix products).
"""

import argparse
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tagjax import allocator, configs, train, xla_options
from tagjax.models import cnn, layers, summaries

NUM_TAGS = 32
DEFAULT_OUT = Path(__file__).parent / "results" / "step_profile.json"


class CellLSTMSummary(summaries._RecurrentStack):
    """The LSTM summary as tagjax had it: Flax's `OptimizedLSTMCell` under `nn.RNN`."""

    hidden: int = 1024
    num_layers: int = 2
    dropout: float = 0.0
    unroll: int = 1
    pool: int = 1
    cell_type = nn.OptimizedLSTMCell


class LayersChoiCNN(cnn.ChoiCNN):
    """Choi's CNN with its layers chosen: `flax.linen.Conv` or `SingleChannelConv` for the first
    (`single_channel_conv`) and `layers.Conv` for the others (`layers_conv`), `BatchNorm` then
    pooling or `MaxPooledBatchNorm` (`pooled_norm`). The same parameters, values and
    gradients."""

    single_channel_conv: bool = True
    pooled_norm: bool = True
    layers_conv: bool = True

    @nn.compact
    def __call__(self, audio, *, train: bool):
        act = cnn.activation_fn(self.activation)
        x = self.normalized(self.log_mel(audio), train=train)[..., None]
        for i, (width, pool) in enumerate(zip(self.channels, self.block_pools(), strict=True)):
            if x.shape[-1] == 1:
                conv = layers.SingleChannelConv if self.single_channel_conv else nn.Conv
            else:
                conv = layers.Conv if self.layers_conv else nn.Conv
            x = conv(width, tuple(self.kernel_size), padding="SAME", use_bias=False,
                     name=f"conv{i}")(x)
            if self.pooled_norm:
                x = act(layers.MaxPooledBatchNorm(pool, use_running_average=not train,
                                                  momentum=self.bn_momentum, name=f"bn{i}")(x))
            else:
                x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                                 name=f"bn{i}")(x)
                x = layers.block_max_pool(act(x), pool)
            if self.dropout:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return jnp.max(x, axis=(1, 2)) if self.output == "clip" else jnp.max(x, axis=2)


def alternate(candidates: dict, rounds: int, steps_per_round: int) -> dict:
    times = {name: [] for name in candidates}
    names = list(candidates)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            for i in range(steps_per_round):
                start = time.perf_counter()
                candidates[name](i)
                times[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(values) for name, values in times.items()}


def cost(compiled) -> dict:
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    return {"gflop": analysis.get("flops", float("nan")) / 1e9,
            "mbytes": analysis.get("bytes accessed", float("nan")) / 1e6}


def step_candidate(model, config, batches, compiler_options=None):
    """The trainer's step of `model`, compiled with `compiler_options` (by default tagjax's,
    `xla_options.compiler_options()`), as `run(i)` (a step on `batches[i % 2]`), and the
    compiled step."""
    variables = train.initial_variables(model, config)
    tx = train._optimizer(config, steps_per_epoch=100, params=variables["params"])
    state = train.create_state(config, tx, variables)
    if compiler_options is None:
        compiler_options = xla_options.compiler_options()
    step = jax.jit(train.make_train_step(model, tx), donate_argnums=0,
                   compiler_options=compiler_options)
    compiled = step.lower(state, batches[0]).compile()
    holder = {"state": state}

    def run(i):
        holder["state"], metrics = compiled(holder["state"], batches[i % 2])
        jax.block_until_ready(metrics)

    run(0)
    return run, compiled


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="cnn_lstm")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps-per-round", dest="steps_per_round", type=int, default=4)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    config = configs.get(args.config)
    config.batch_size = args.batch
    model = train.tj_models.build(train._model_config(config, NUM_TAGS))
    variables = train.initial_variables(model, config)
    rng = np.random.default_rng(0)
    crop = train._crop_samples(config)
    batches = [{"audio": jnp.asarray(0.1 * rng.standard_normal((args.batch, crop)), jnp.float32),
                "labels": jnp.asarray(rng.integers(0, 2, (args.batch, NUM_TAGS)), jnp.float32)}
               for _ in range(2)]
    params, others = variables["params"], {k: v for k, v in variables.items() if k != "params"}
    key = jax.random.key(0)

    def apply(p, audio, method=None):
        return model.apply({"params": p, **others}, audio, train=True, rngs={"dropout": key},
                           mutable=["batch_stats"], method=method)[0]

    frames = apply(params, batches[0]["audio"], "frontend_output")

    def log_mel(audio):
        return model.frontend.apply({"params": params["frontend"]}, audio, method="log_mel")

    def frontend_forward(p, audio):
        return apply(p, audio, "frontend_output").sum()

    def summary_loss(p, frames):
        return model.summary.apply({"params": p["summary"]}, frames, train=True).sum()

    def loss(p, batch):
        return optax.sigmoid_binary_cross_entropy(apply(p, batch["audio"]), batch["labels"]).mean()

    parts = {
        "log-mel (forward)": (log_mel, (batches[0]["audio"],)),
        "front end forward": (frontend_forward, (params, batches[0]["audio"])),
        "front end forward+backward": (jax.grad(frontend_forward), (params, batches[0]["audio"])),
        "summary forward+backward": (jax.grad(summary_loss), (params, frames)),
        "loss gradient": (jax.grad(loss), (params, batches[0])),
    }
    candidates, costs = {}, {}
    for name, (fn, fn_args) in parts.items():
        compiled = xla_options.jit(fn).lower(*fn_args).compile()
        costs[name] = cost(compiled)
        candidates[name] = (lambda i, c=compiled, a=fn_args: jax.block_until_ready(c(*a)))
        candidates[name](0)
    candidates["whole step"], compiled = step_candidate(model, config, batches)
    costs["whole step"] = cost(compiled)
    part_ms = alternate(candidates, args.rounds, args.steps_per_round)
    print(f"{args.config} step parts, batch {args.batch}, medians of "
          f"{args.rounds * args.steps_per_round}; load average {os.getloadavg()[0]:.1f}")
    print(f"{'part':<28} {'ms':>8} {'XLA GFLOP':>10} {'XLA MB':>8}")
    for name, ms in part_ms.items():
        print(f"{name:<28} {ms:8.1f} {costs[name]['gflop']:10.2f} {costs[name]['mbytes']:8.1f}")

    default_name, tagjax_name = "jaxlib's default options", "tagjax's (xla_options)"
    options = alternate(
        {default_name: step_candidate(model, config, batches, compiler_options={})[0],
         tagjax_name: step_candidate(model, config, batches)[0]},
        args.rounds, args.steps_per_round)
    print("\nCompiler options, whole step:")
    for name, ms in options.items():
        print(f"  {name:<32} {ms:8.1f} ms")
    print(f"  gain: {options[default_name] / options[tagjax_name]:.2f}x")

    lstm = None
    if model.summary.__class__ is summaries.LSTMSummary:
        s = model.summary
        before_model = model.clone(summary=CellLSTMSummary(
            hidden=s.hidden, num_layers=s.num_layers, dropout=s.dropout, unroll=s.unroll,
            pool=s.pool))
        before, _ = step_candidate(before_model, config, batches)
        after, _ = step_candidate(model, config, batches)
        lstm = alternate({"before: Flax cell": before, "after: input product hoisted": after},
                         args.rounds, args.steps_per_round)
        print("\nLSTM input product, whole step:")
        for name, ms in lstm.items():
            print(f"  {name:<32} {ms:8.1f} ms")
        print(f"  gain: {lstm['before: Flax cell'] / lstm['after: input product hoisted']:.2f}x")
    cnn_layers = None
    if isinstance(model.frontend, cnn.ChoiCNN):
        fields = {f.name: getattr(model.frontend, f.name)
                  for f in dataclasses.fields(model.frontend)
                  if f.init and f.name not in ("parent", "name")}
        variants = {"before: Flax Conv, BatchNorm, pool": (False, False, False),
                    "SingleChannelConv only": (True, False, False),
                    "MaxPooledBatchNorm only": (False, True, False),
                    "layers.Conv only": (False, False, True),
                    "after: all three": (True, True, True)}
        cnn_candidates = {}
        for name, (single, norm, layers_conv) in variants.items():
            frontend = LayersChoiCNN(**fields, single_channel_conv=single, pooled_norm=norm,
                                     layers_conv=layers_conv)
            cnn_candidates[name], _ = step_candidate(model.clone(frontend=frontend), config,
                                                     batches)
        cnn_layers = alternate(cnn_candidates, args.rounds, args.steps_per_round)
        before = cnn_layers["before: Flax Conv, BatchNorm, pool"]
        print("\nCNN layers, whole step:")
        for name, ms in cnn_layers.items():
            print(f"  {name:<36} {ms:8.1f} ms  {before / ms:5.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(config=args.config, batch=args.batch,
                                        parts_ms=part_ms, xla_cost=costs,
                                        compiler_options_step_ms=options, lstm_step_ms=lstm,
                                        cnn_layers_step_ms=cnn_layers,
                                        load_average=os.getloadavg()[0],
                                        allocator=allocator.in_effect()),
                                   indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    # Both sides run under the allocator of tagjax's commands (tagjax/allocator.py).
    allocator.reexecute()
    main()
