"""Every convolution of a config's training step, forward and both gradients, in tagjax and in
PyTorch at the same shapes: how much of the step's gap to PyTorch its convolution kernels are.

    pip install -e ".[bench-torch]" --extra-index-url https://download.pytorch.org/whl/cpu
    python benchmarks/torch_conv_layers.py [--configs cnn_lstm,short_res] [--batch 16]
        [--rounds 5] [--calls-per-round 3] [--threads 2] [--same-process] [--out PATH.json]

The layers are those of `torch_peer.py`'s networks (the same as tagjax's, layer for layer),
found by running the PyTorch network once on a batch of the config's crops and recording each
`nn.Conv2d`'s input. For each layer three passes are timed, each as the training step computes
it:

- tagjax: the function the model calls (`layers.single_channel_conv` for the one-channel first
  layer of Choi's CNNs, `layers.conv` otherwise: on the CPU a product of patches for small
  maps and one-channel inputs, Winograd's F(2 x 2, 3 x 3) for large 3 x 3 stride-1 layers of
  128 channels or more, XLA's convolutions for the others), jitted alone, NHWC; the
  input gradient and the kernel gradient as the VJP with respect to one argument (XLA removes
  the other half);
- PyTorch: `F.conv2d` and `aten.convolution_backward` with one output each, NCHW as the peer
  network runs them (oneDNN's kernels; `torch.compile` calls the same ones for convolutions).

Where the model computes two convolutions of one input in one pass (`layers.forked_conv`: a
downsampling block's `conv1` and `conv_shortcut`), they are one row, `conv1 + conv_shortcut`:
tagjax's forked convolution against PyTorch's two operators one after the other.

Each library runs in a worker process of its own (`--same-process`: both in this one), as in
`torch_peer.py`: in one process each slows the other. Rounds alternate the two (the order
swapping from round to round) so that a shared machine slows both alike; medians over all
calls. The table's totals add the layers' medians: set beside the two steps' times
(`torch_peer.py`), they say how much of the difference is convolution arithmetic and how much
the rest of the step.
"""

import argparse
import functools
import json
import os
import statistics
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch_peer import NUM_TAGS, TorchChoiCNN, environment, torch_model
from workers import start_sides, timed_calls

from tagjax import allocator, configs, train, xla_options
from tagjax.models import layers

CONFIGS = ("cnn_lstm", "short_res")
PASSES = ("forward", "input gradient", "kernel gradient")
LIBRARIES = ("tagjax", "torch")
DEFAULT_OUT = Path(__file__).parent / "results" / "torch_conv_layers.json"
NAME_WIDTH = 40  # "frontend.blocks.1.conv1 + conv_shortcut"


def conv_layers(name: str, batch: int) -> list[dict]:
    """`[{name, input (N, C, H, W), features, parts, kernel, stride, padding, single_channel}]`,
    every convolution of config `name`'s network in the order the forward pass runs them; the
    ones the model forks (`_fork`) as one, `parts` their output channels apart."""
    config = configs.get(name)
    model = train.tj_models.build(train._model_config(config, NUM_TAGS))
    net = torch_model(model).eval()
    names = {module: qualified for qualified, module in net.named_modules()}
    found = []

    def record(module, inputs, output):
        found.append(dict(name=names[module], input=tuple(inputs[0].shape),
                          # Kept until _fork, so that no later input takes its id.
                          input_tensor=inputs[0], features=module.out_channels,
                          parts=(module.out_channels,), kernel=tuple(module.kernel_size),
                          stride=tuple(module.stride), padding=tuple(module.padding),
                          # Choi's CNNs give their one-channel first layer its own gradient.
                          single_channel=(isinstance(net.frontend, TorchChoiCNN)
                                          and module.in_channels == 1)))

    hooks = [module.register_forward_hook(record) for module in net.modules()
             if isinstance(module, nn.Conv2d)]
    audio = torch.zeros(batch, train._crop_samples(config))
    with torch.no_grad():
        net(audio)
    for hook in hooks:
        hook.remove()
    return _fork(found)


def _fork(found: list[dict]) -> list[dict]:
    """`found` with the convolutions that read one input through one window, as `forked_conv`
    computes them (over `layers._MAX_UNFORKED_CHANNELS` input channels), merged into the first
    of them: named "first + second's last part", `features` added, `parts` kept apart."""
    kept, first_of = [], {}
    for layer in found:
        key = (id(layer.pop("input_tensor")), layer["kernel"], layer["stride"], layer["padding"])
        first = first_of.get(key)
        if first is None or layer["input"][1] <= layers._MAX_UNFORKED_CHANNELS:
            first_of[key] = layer
            kept.append(layer)
        else:
            first.update(name=f"{first['name']} + {layer['name'].rsplit('.', 1)[-1]}",
                         features=first["features"] + layer["features"],
                         parts=first["parts"] + layer["parts"])
    return kept


def gflop(layer: dict) -> float:
    """Multiply-adds x 2 of one pass (each pass of a convolution does the same products)."""
    n, c, h, w = layer["input"]
    (kh, kw), (sh, sw), (ph, pw) = layer["kernel"], layer["stride"], layer["padding"]
    h_out, w_out = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    return 2 * n * h_out * w_out * layer["features"] * c * kh * kw / 1e9


def tagjax_passes(layer: dict, rng) -> dict:
    """`{pass: () -> None}`, each a compiled tagjax program on the layer's arrays."""
    n, c, h, w = layer["input"]
    (kh, kw), stride = layer["kernel"], layer["stride"]
    padding = tuple((p, p) for p in layer["padding"])
    if layer["single_channel"]:
        def conv(x, kernels):
            return (layers.single_channel_conv(x, kernels[0], padding),)
    elif len(layer["parts"]) > 1:
        def conv(x, kernels):
            return layers.forked_conv(x, kernels, stride, padding)
    else:
        def conv(x, kernels):
            return (layers.conv(x, kernels[0], stride, padding),)
    x = jnp.asarray(rng.standard_normal((n, h, w, c)), jnp.float32)
    k = tuple(jnp.asarray(rng.standard_normal((kh, kw, c, features)) / np.sqrt(kh * kw * c),
                          jnp.float32) for features in layer["parts"])
    g = tuple(jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
              for y in jax.eval_shape(conv, x, k))
    def input_gradient(x, k, g):
        return jax.vjp(lambda x: conv(x, k), x)[1](g)[0]

    def kernel_gradient(x, k, g):
        return jax.vjp(lambda k: conv(x, k), k)[1](g)[0]

    # Compiled as tagjax compiles its models (xla_options).
    programs = {"forward": (xla_options.jit(conv), (x, k)),
                "input gradient": (xla_options.jit(input_gradient), (x, k, g)),
                "kernel gradient": (xla_options.jit(kernel_gradient), (x, k, g))}
    calls = {}
    for key, (program, arguments) in programs.items():
        compiled = program.lower(*arguments).compile()
        calls[key] = lambda compiled=compiled, arguments=arguments: jax.block_until_ready(
            compiled(*arguments))
    return calls


def torch_passes(layer: dict, rng) -> dict:
    """`{pass: () -> None}`, each the ATen operators the PyTorch step calls (one per part), on
    NCHW arrays."""
    n, c, h, w = layer["input"]
    (kh, kw), stride, padding = layer["kernel"], layer["stride"], layer["padding"]
    x = torch.from_numpy(rng.standard_normal((n, c, h, w)).astype(np.float32))
    kernels = [torch.from_numpy((rng.standard_normal((features, c, kh, kw))
                                 / np.sqrt(kh * kw * c)).astype(np.float32))
               for features in layer["parts"]]
    with torch.no_grad():
        grads = [torch.randn_like(F.conv2d(x, k, None, stride, padding)) for k in kernels]

    def forward():
        return [F.conv2d(x, k, None, stride, padding) for k in kernels]

    def backward(mask):
        return [torch.ops.aten.convolution_backward(g, x, k, None, stride, padding, (1, 1),
                                                    False, (0, 0), 1, mask)
                for g, k in zip(grads, kernels, strict=True)]

    return {"forward": forward,
            "input gradient": lambda: backward((True, False, False)),
            "kernel gradient": lambda: backward((False, True, False))}


def _timed_ms(call, n: int) -> list[float]:
    """ms of each of `n` calls (`workers.timed_calls`), autograd off."""
    with torch.no_grad():
        return [1e3 * seconds for seconds in timed_calls(call, n)]


def side_turns(library: str, layer_list: list[dict], threads: int) -> tuple[dict, dict]:
    """One library's passes of every layer, each called once (oneDNN builds its kernels on the
    first call), as `{"layer index/pass": turn(n) -> [ms] * n}`."""
    if library == "torch":
        torch.set_num_threads(threads)
    build = {"tagjax": tagjax_passes, "torch": torch_passes}[library]
    turns = {}
    for index, layer in enumerate(layer_list):
        for key, call in build(layer, np.random.default_rng(index)).items():
            _timed_ms(call, 1)
            turns[f"{index}/{key}/{library}"] = functools.partial(_timed_ms, call)
    return turns, {}


def time_layer(turns: dict, index: int, rounds: int, calls_per_round: int) -> dict:
    """`{library: {pass: median ms}}` of layer `index` over alternating rounds."""
    times = {library: {key: [] for key in PASSES} for library in LIBRARIES}
    for round_index in range(rounds):
        for key in PASSES:
            for library in LIBRARIES[::-1 if round_index % 2 else 1]:
                times[library][key] += turns[f"{index}/{key}/{library}"](calls_per_round)
    return {library: {key: statistics.median(values) for key, values in passes.items()}
            for library, passes in times.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls-per-round", dest="calls_per_round", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--same-process", dest="same_process", action="store_true",
                        help="run both libraries in this process (by default each has its own)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    results = []
    print(f"convolutions of the training step, batch {args.batch}, median ms of "
          f"{args.rounds * args.calls_per_round} calls ({args.rounds} alternating rounds); "
          f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs")
    header = "".join(f"{key:>26}" for key in PASSES)
    for name in args.configs.split(","):
        print(f"\n{name}\n{'layer':<{NAME_WIDTH}} {'input (N, C, H, W)':<20} {'out':>4} {'str':>3} "
              f"{'GFLOP':>6}{header}")
        print(f"{'':<{NAME_WIDTH + 36}}" + "     tagjax  torch  ratio" * len(PASSES))
        layer_list = conv_layers(name, args.batch)
        # Each library in a process of its own, unless --same-process.
        turns, _, workers = start_sides(side_turns, LIBRARIES, layer_list, args.threads,
                                        same_process=args.same_process)
        totals = {library: dict.fromkeys(PASSES, 0.0) for library in LIBRARIES}
        for index, layer in enumerate(layer_list):
            ms = time_layer(turns, index, args.rounds, args.calls_per_round)
            results.append(dict(config=name, **layer, gflop=gflop(layer), ms=ms))
            cells = "".join(f"{ms['tagjax'][key]:11.1f}{ms['torch'][key]:7.1f}"
                            f"{ms['torch'][key] / ms['tagjax'][key]:6.2f}x" for key in PASSES)
            print(f"{layer['name']:<{NAME_WIDTH}} {layer['input']!s:<20} {layer['features']:>4} "
                  f"{layer['stride'][0]:>3} {gflop(layer):6.2f}{cells}", flush=True)
            for library in totals:
                for key in PASSES:
                    totals[library][key] += ms[library][key]
        for worker in workers:
            worker.close()
        cells = "".join(f"{totals['tagjax'][key]:11.1f}{totals['torch'][key]:7.1f}"
                        f"{totals['torch'][key] / totals['tagjax'][key]:6.2f}x" for key in PASSES)
        print(f"{'total':<{NAME_WIDTH + 36}}{cells}")
        all_passes = {library: sum(values.values()) for library, values in totals.items()}
        print(f"all passes of all layers: tagjax {all_passes['tagjax']:.1f} ms, PyTorch "
              f"{all_passes['torch']:.1f} ms (tagjax - PyTorch: "
              f"{all_passes['tagjax'] - all_passes['torch']:+.1f} ms)")
        results.append(dict(config=name, total_ms=totals, all_passes_ms=all_passes))
    print("ratio: PyTorch's median / tagjax's; above 1, tagjax is faster.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(
        environment=environment(),
        settings=dict(batch=args.batch, rounds=args.rounds,
                      calls_per_round=args.calls_per_round, same_process=args.same_process),
        results=results), indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    # Both sides run under the allocator of tagjax's commands (tagjax/allocator.py).
    allocator.reexecute()
    main()
