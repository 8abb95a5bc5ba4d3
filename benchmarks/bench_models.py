"""Training-step and inference cost of the tj.models configurations on this machine.

For each model of the training configs (`tagjax.configs`): compile time and median run time of a
jitted Adam training step (forward, binary cross-entropy, backward, update) and of an inference
forward pass, on a batch of random crops. Models with max pooling are timed twice in the same
run, with tagjax's reshape pooling (`layers.block_max_pool`) and with Flax's `nn.max_pool`
(`reduce_window`), timed in alternation, and the ratio is reported. No PyTorch or TensorFlow
peer is installed, so there is no cross-framework comparison.

    python benchmarks/bench_models.py [--models cnn_lstm,fcn] [--batch 16] [--seconds 3]
        [--repeats 5] [--out benchmarks/results/models.json]
"""

import argparse
import json
import os
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import tagjax.models as tjm
from tagjax import configs, xla_options
from tagjax.models import cnn, resnet

NUM_TAGS = 50
SR = 16000
DEFAULT_MODELS = "cnn_lstm,crnn,fcn,mfcc_lstm,mfcc_bof,short_res"
POOLINGS = {
    "reshape": cnn.block_max_pool,
    "reduce_window": lambda x, window: nn.max_pool(x, tuple(window), strides=tuple(window),
                                                   padding="SAME"),
}


def _set_pooling(name):
    cnn.block_max_pool = resnet.block_max_pool = POOLINGS[name]


def _compile(fn, args):
    start = time.perf_counter()
    compiled = xla_options.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(*args))  # warm-up
    return compiled, compile_s


def compile_model(model_config, batch, samples):
    """Compiled `train` and `infer` calls of one model, with their inputs and compile times."""
    model = tjm.build({**model_config, "num_tags": NUM_TAGS, "sample_rate": SR})
    rng = np.random.default_rng(0)
    audio = jnp.asarray(0.1 * rng.standard_normal((batch, samples)), jnp.float32)
    labels = jnp.asarray(rng.random((batch, NUM_TAGS)) < 0.1, jnp.float32)

    start = time.perf_counter()
    variables = jax.jit(lambda a: model.init(jax.random.key(0), a, train=False))(audio)
    jax.block_until_ready(variables)
    init_s = time.perf_counter() - start
    params = variables.pop("params")
    tx = optax.adam(1e-3)
    opt_state = tx.init(params)

    def train_step(params, opt_state, state, audio, labels, key):
        def loss_fn(params):
            logits, updates = model.apply({"params": params, **state}, audio, train=True,
                                          rngs={"dropout": key}, mutable=["batch_stats"])
            return optax.sigmoid_binary_cross_entropy(logits, labels).mean(), updates

        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        changes, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, changes), opt_state, {**state, **updates}, loss

    train_args = (params, opt_state, variables, audio, labels, jax.random.key(1))
    infer_args = ({"params": params, **variables}, audio)
    train, train_compile_s = _compile(train_step, train_args)
    infer, infer_compile_s = _compile(lambda v, a: model.apply(v, a, train=False), infer_args)
    return dict(
        calls={"train": (train, train_args), "infer": (infer, infer_args)},
        row=dict(params=int(sum(x.size for x in jax.tree_util.tree_leaves(params))),
                 init_compile_and_run_s=init_s, train_compile_s=train_compile_s,
                 infer_compile_s=infer_compile_s),
    )


def time_interleaved(variants, repeats):
    """Median seconds of each variant's calls, the variants taking turns so that the load of a
    shared machine drifts over all of them alike."""
    times = {(v, call): [] for v in variants for call in variants[v]["calls"]}
    for _ in range(repeats):
        for v, compiled in variants.items():
            for call, (fn, args) in compiled["calls"].items():
                start = time.perf_counter()
                jax.block_until_ready(fn(*args))
                times[v, call].append(time.perf_counter() - start)
    return {key: statistics.median(values) for key, values in times.items()}


def _has_pooling(model_config):
    frontend = model_config["frontend"]
    return frontend["name"] in ("cnn5", "fcn") or frontend.get("downsample") == "maxpool"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "models.json"))
    args = parser.parse_args()
    samples = int(args.seconds * SR)

    rows = []
    for name in args.models.split(","):
        model_config = configs.get(name).model
        model_config = model_config.to_dict()
        if model_config["summary"]["name"] == "bof":
            model_config["summary"].setdefault("k", 256)
        variants = {}
        for pooling in list(POOLINGS) if _has_pooling(model_config) else ["reshape"]:
            _set_pooling(pooling)
            variants[pooling] = compile_model(model_config, args.batch, samples)
        _set_pooling("reshape")
        medians = time_interleaved(variants, args.repeats)
        for pooling, compiled in variants.items():
            row = dict(model=name, pooling=pooling, **compiled["row"],
                       train_step_s=medians[pooling, "train"],
                       infer_s=medians[pooling, "infer"])
            row["train_clips_per_s"] = args.batch / row["train_step_s"]
            row["infer_clips_per_s"] = args.batch / row["infer_s"]
            rows.append(row)
            print(f"{name} ({pooling}): train step {row['train_step_s'] * 1e3:.0f} ms", flush=True)

    print(f"\ndevice: {jax.devices()[0].device_kind}, {os.cpu_count()} cores visible, "
          f"batch {args.batch} x {args.seconds} s, medians of {args.repeats}")
    print(f"{'model':<11} {'pooling':<13} {'params':>9} {'init s':>7} {'train compile s':>15} "
          f"{'train ms':>9} {'clips/s':>8} {'infer compile s':>15} {'infer ms':>9} "
          f"{'reduce_window/reshape (train, infer)':>37}")
    for r in rows:
        other = [o for o in rows if o["model"] == r["model"] and o["pooling"] == "reduce_window"]
        ratios = None
        if other and r["pooling"] == "reshape":
            ratios = (other[0]["train_step_s"] / r["train_step_s"],
                      other[0]["infer_s"] / r["infer_s"])
        r["reduce_window_over_reshape"] = ratios
        ratio_text = f"{ratios[0]:.2f}x, {ratios[1]:.2f}x" if ratios else ""
        print(f"{r['model']:<11} {r['pooling']:<13} {r['params']:>9} "
              f"{r['init_compile_and_run_s']:>7.1f} {r['train_compile_s']:>15.1f} "
              f"{1e3 * r['train_step_s']:>9.0f} {r['train_clips_per_s']:>8.1f} "
              f"{r['infer_compile_s']:>15.1f} {1e3 * r['infer_s']:>9.0f} {ratio_text:>37}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(dict(device=str(jax.devices()[0]), batch=args.batch, seconds=args.seconds,
                       repeats=args.repeats, rows=rows), f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
