"""The training step of `cnn_lstm`, `fcn` and `short_res` against the same networks in PyTorch.

    pip install -e ".[bench-torch]" --extra-index-url https://download.pytorch.org/whl/cpu
    python benchmarks/torch_peer.py [--configs cnn_lstm,fcn,short_res] [--batch 16] [--rounds 5]
        [--steps-per-round 4] [--warmup-steps 3] [--threads 2] [--no-compile] [--same-process]
        [--out PATH.json]

PyTorch is a benchmark-only dependency (the `bench-torch` extra); tagjax never imports it.

For each config the step is what the trainer runs: 16 crops of raw audio (3 s; 3.69 s for
`short_res`) in, the log-mel spectrogram computed inside the step, forward, binary
cross-entropy, backward, AdamW with the config's warmup-cosine schedule (100 steps an epoch).
The PyTorch network is built layer for layer from the tagjax config (same convolutions, batch
norms, pools rounding up, LSTM and heads), its trained parameters counted and asserted equal to
tagjax's, and tagjax's initial weights copied into it. Before any timing the two are run from
those weights on the same batch with dropout off: logits, loss and every gradient must agree
within the float32 bound in `tolerance` (asserted). PyTorch's LSTM has two biases per gate where
tagjax's (Flax's) has one: the input-side bias is kept at zero and frozen, so the trained
parameters are the same.

Timing: PyTorch eager and `torch.compile` (its default mode; the model compiled, the fused
AdamW left as it is) and the jitted tagjax step, each in its own copy of the state. Each side
runs in a worker process of its own, built from the same initial weights and batches
(`--same-process` runs both in this one: there, single tagjax steps right after PyTorch's took
up to twice as long as before any PyTorch step, though the medians of 64 steps moved by under
4%), and only one worker runs at a time. Compile times are measured apart (tagjax:
`lower().compile()`; PyTorch: the first compiled call, less an eager step). Then
`--warmup-steps` untimed steps of each candidate, and rounds: each round runs
`--steps-per-round` steps of every candidate, the order rotating from round to round, so that a
machine shared with other work slows all of them alike. The table gives the median step over all
rounds, and the ratio PyTorch's best / tagjax (above 1: tagjax faster) as the median over rounds
of the same-round ratios; a second table the CPU time of a step (every thread of the
candidate's process, `time.process_time`) and the cores it kept busy. PyTorch runs with
`torch.set_num_threads(--threads)`; XLA's CPU backend uses one thread per core
(`os.cpu_count()`).
"""

import argparse
import copy
import functools
import itertools
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import torch.nn.functional as F
from machine import cpu_description
from torch import nn
from workers import start_sides

from tagjax import allocator, configs, train, xla_options
from tagjax.features import mel as tj_mel
from tagjax.features import spectral as tj_spectral
from tagjax.models import cnn as tj_cnn

CONFIGS = ("cnn_lstm", "fcn", "short_res")
NUM_TAGS = 32  # the synth data set's
STEPS_PER_EPOCH = 100
DEFAULT_OUT = Path(__file__).parent / "results" / "torch_peer.json"
FLOAT32_UNIT_ROUNDOFF = 2.0**-24


# --- the PyTorch networks ----------------------------------------------------------------------


class TorchLogMel(nn.Module):
    """tagjax's `LogMel` front end: `(batch, samples)` -> normalised dB `(batch, frames, n_mels)`,
    with tagjax's own window and filterbank values (float64-built, cast to float32)."""

    def __init__(self, frontend):
        super().__init__()
        self.n_fft, self.hop = frontend.n_fft, frontend.hop_length
        self.pad_mode, self.top_db = frontend.pad_mode, frontend.top_db
        window = tj_spectral._window_np("hann", frontend.n_fft, frontend.n_fft)
        fmax = frontend.fmax if frontend.fmax is not None else frontend.sample_rate / 2
        filterbank = tj_mel._mel_filterbank_np(float(frontend.sample_rate), frontend.n_fft,
                                               frontend.n_mels, float(frontend.fmin),
                                               float(fmax), frontend.htk, frontend.mel_norm)
        # Not buffers: `.float()` would round them once and a float64 copy would keep that
        # rounding. Each dtype gets the float64 values rounded once, as tagjax casts them.
        self.constants = {dtype: (torch.tensor(window, dtype=dtype),
                                  torch.tensor(filterbank, dtype=dtype))
                          for dtype in (torch.float32, torch.float64)}
        self.n_bins = filterbank.shape[0]
        self.global_norm = frontend.normalize == "batchnorm_global"
        self.input_norm = nn.BatchNorm1d(1 if self.global_norm else frontend.n_mels,
                                         eps=frontend.bn_epsilon, momentum=1 - frontend.bn_momentum)

    def forward(self, audio):
        window, filterbank = self.constants[audio.dtype]
        spectrum = torch.stft(audio, self.n_fft, self.hop, window=window, center=True,
                              pad_mode=self.pad_mode, return_complex=True)  # (batch, bins, frames)
        power = spectrum.real.square() + spectrum.imag.square()
        db = 10.0 * torch.log10(torch.clamp(power.transpose(1, 2) @ filterbank, min=1e-10))
        if self.top_db is not None:
            db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - self.top_db)
        if self.global_norm:  # one statistic over the whole spectrogram
            return self.input_norm(db.reshape(db.shape[0], 1, -1)).reshape(db.shape)
        return self.input_norm(db.transpose(1, 2)).transpose(1, 2)


class TorchChoiCNN(nn.Module):
    """tagjax's `ChoiCNN`: conv 3x3 (no bias), batch norm, ELU, max pool rounding up; a global
    max (clip) or a max over frequency (sequence). Layout NCHW with H = time, W = frequency."""

    def __init__(self, frontend):
        super().__init__()
        self.log_mel = TorchLogMel(frontend)
        self.pools = frontend.block_pools()
        self.output = frontend.output
        momentum = 1 - frontend.bn_momentum
        widths = (1, *frontend.channels)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1, bias=False)
                                   for a, b in itertools.pairwise(widths))
        self.norms = nn.ModuleList(nn.BatchNorm2d(b, momentum=momentum) for b in widths[1:])
        assert frontend.activation == "elu" and tuple(frontend.kernel_size) == (3, 3)

    def forward(self, audio):
        x = self.log_mel(audio)[:, None]
        for conv, norm, pool in zip(self.convs, self.norms, self.pools, strict=True):
            x = F.elu(norm(conv(x)))
            if pool != (1, 1):
                x = F.max_pool2d(x, pool, pool, ceil_mode=True)
        if self.output == "clip":
            return x.amax(dim=(2, 3))
        return x.amax(dim=3).transpose(1, 2)  # (batch, frames', channels)


class TorchResidualBlock(nn.Module):
    def __init__(self, channels_in, channels_out, momentum):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels_out, momentum=momentum)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels_out, momentum=momentum)
        self.conv_shortcut = nn.Conv2d(channels_in, channels_out, 3, stride=2, padding=1,
                                       bias=False)
        self.bn_shortcut = nn.BatchNorm2d(channels_out, momentum=momentum)

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(self.bn_shortcut(self.conv_shortcut(x)) + y)


class TorchShortChunkResNet(nn.Module):
    """tagjax's `ShortChunkResNet` with stride-2 downsampling (Won et al.'s released code)."""

    def __init__(self, frontend):
        super().__init__()
        assert frontend.downsample == "stride"
        self.log_mel = TorchLogMel(frontend)
        widths = (1, *frontend.channels)
        self.blocks = nn.ModuleList(TorchResidualBlock(a, b, 1 - frontend.bn_momentum)
                                    for a, b in itertools.pairwise(widths))

    def forward(self, audio):
        x = self.log_mel(audio)[:, None]
        for block in self.blocks:
            x = block(x)
        return x.amax(dim=(2, 3))


class TorchLSTMSummary(nn.Module):
    """Sequence-to-one stacked LSTM (oneDNN's kernel: the input part of every step in one
    product). The input-side biases are zero and frozen: tagjax's cell has one bias per gate."""

    def __init__(self, summary, dim):
        super().__init__()
        assert summary.pool == 1 and summary.dropout == 0.0
        self.lstm = nn.LSTM(dim, summary.hidden, summary.num_layers, batch_first=True)
        for layer in range(summary.num_layers):
            bias = getattr(self.lstm, f"bias_ih_l{layer}")
            nn.init.zeros_(bias)
            bias.requires_grad_(False)

    def forward(self, x):
        return self.lstm(x)[0][:, -1]


class TorchMLPHead(nn.Module):
    def __init__(self, head, dim):
        super().__init__()
        self.hidden_dense = nn.Linear(dim, head.hidden)
        self.hidden_norm = (nn.BatchNorm1d(head.hidden, momentum=1 - head.bn_momentum)
                            if head.batch_norm else None)
        self.dropout = nn.Dropout(head.dropout)
        self.output = nn.Linear(head.hidden, head.num_tags)

    def forward(self, f):
        h = self.hidden_dense(f)
        if self.hidden_norm is not None:
            h = self.hidden_norm(h)
        return self.output(self.dropout(F.relu(h)))


class TorchLinearHead(nn.Module):
    def __init__(self, head, dim):
        super().__init__()
        self.dropout = nn.Dropout(head.dropout)
        self.output = nn.Linear(dim, head.num_tags)

    def forward(self, f):
        return self.output(self.dropout(f))


class TorchTagger(nn.Module):
    def __init__(self, frontend, summary, head):
        super().__init__()
        self.frontend, self.summary, self.head = frontend, summary, head

    def forward(self, audio):
        return self.head(self.summary(self.frontend(audio)))


def torch_model(model) -> TorchTagger:
    """The PyTorch network of a tagjax `TaggingModel` (the three configs' components only)."""
    frontend = model.frontend
    if isinstance(frontend, tj_cnn.ChoiCNN):
        torch_frontend, dim = TorchChoiCNN(frontend), frontend.channels[-1]
    elif type(frontend).__name__ == "ShortChunkResNet":
        torch_frontend, dim = TorchShortChunkResNet(frontend), frontend.channels[-1]
    else:
        raise NotImplementedError(f"no PyTorch peer for {type(frontend).__name__}")
    summary_name = type(model.summary).__name__
    if summary_name == "LSTMSummary":
        summary, dim_out = TorchLSTMSummary(model.summary, dim), model.summary.hidden
    elif summary_name == "NoSummary":
        summary, dim_out = nn.Identity(), dim
    else:
        raise NotImplementedError(f"no PyTorch peer for {summary_name}")
    head_name = type(model.head).__name__
    head = (TorchMLPHead if head_name == "MLPHead" else TorchLinearHead)(model.head, dim_out)
    return TorchTagger(torch_frontend, summary, head)


# --- tagjax's weights into the PyTorch network -------------------------------------------------


def _norm_pairs(module, flax_params, flax_stats):
    pairs = [(module.weight, flax_params["scale"]), (module.bias, flax_params["bias"])]
    if flax_stats is not None:
        pairs += [(module.running_mean, flax_stats["mean"]),
                  (module.running_var, flax_stats["var"])]
    return pairs


def _conv(kernel):  # Flax (time, freq, in, out) -> PyTorch (out, in, time, freq)
    return np.transpose(kernel, (3, 2, 0, 1))


def weight_pairs(net: TorchTagger, params: dict, stats: dict | None = None) -> list:
    """`(torch tensor, the Flax array that goes into it in PyTorch's layout)` for every trained
    parameter (and, with `stats`, batch-norm statistic). Applied to gradients, the same map
    puts tagjax's gradients in PyTorch's layout."""
    p_front, s_front = params["frontend"], (stats or {}).get("frontend")
    pairs = _norm_pairs(net.frontend.log_mel.input_norm, p_front["input_norm"],
                        s_front and s_front["input_norm"])
    if isinstance(net.frontend, TorchChoiCNN):
        for i, (conv, norm) in enumerate(zip(net.frontend.convs, net.frontend.norms, strict=True)):
            pairs.append((conv.weight, _conv(p_front[f"conv{i}"]["kernel"])))
            pairs += _norm_pairs(norm, p_front[f"bn{i}"], s_front and s_front[f"bn{i}"])
    else:
        for i, block in enumerate(net.frontend.blocks):
            p_block, s_block = p_front[f"block{i}"], s_front and s_front[f"block{i}"]
            for conv, bn in (("conv1", "bn1"), ("conv2", "bn2"),
                             ("conv_shortcut", "bn_shortcut")):
                pairs.append((getattr(block, conv).weight, _conv(p_block[conv]["kernel"])))
                pairs += _norm_pairs(getattr(block, bn), p_block[bn], s_block and s_block[bn])
    if isinstance(net.summary, TorchLSTMSummary):
        for layer in range(net.summary.lstm.num_layers):
            p = params["summary"][f"layer{layer}"]
            lstm = net.summary.lstm
            # PyTorch stacks the gates i, f, g, o along the output rows.
            pairs.append((getattr(lstm, f"weight_ih_l{layer}"),
                          np.concatenate([p[f"i{g}"]["kernel"].T for g in "ifgo"])))
            pairs.append((getattr(lstm, f"weight_hh_l{layer}"),
                          np.concatenate([p[f"h{g}"]["kernel"].T for g in "ifgo"])))
            pairs.append((getattr(lstm, f"bias_hh_l{layer}"),
                          np.concatenate([p[f"h{g}"]["bias"] for g in "ifgo"])))
    p_head, s_head = params["head"], (stats or {}).get("head")
    for name in ("hidden_dense", "output"):
        if hasattr(net.head, name):
            layer = getattr(net.head, name)
            pairs += [(layer.weight, p_head[name]["kernel"].T), (layer.bias, p_head[name]["bias"])]
    if getattr(net.head, "hidden_norm", None) is not None:
        pairs += _norm_pairs(net.head.hidden_norm, p_head["hidden_norm"],
                             s_head and s_head["hidden_norm"])
    return pairs


def load_weights(net: TorchTagger, variables: dict) -> None:
    as_numpy = jax.tree.map(np.asarray, variables)
    with torch.no_grad():
        for tensor, value in weight_pairs(net, as_numpy["params"], as_numpy.get("batch_stats")):
            assert tensor.shape == value.shape, (tensor.shape, value.shape)
            tensor.copy_(torch.from_numpy(np.ascontiguousarray(value)))


def trained_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


# --- parity ------------------------------------------------------------------------------------


def tolerance(net: TorchTagger, steps: int, unit_roundoff: float) -> float:
    """Bound on |tagjax - PyTorch| relative to the largest value compared.

    Each floating-point sum of K terms is exact to Higham's gamma_K ~ K u of the sum of the
    terms' magnitudes (u: the unit roundoff); the layers are sequential, so (batch norm keeping
    every layer at unit scale) their bounds add up: the sum of K over the network's depth. The
    sums are the FFT (log2(n_fft) stages), the mel product (the filterbank's length), every
    convolution and dense layer (fan-in), every batch norm's mean and variance (batch x time x
    frequency terms, found by running the network) and the LSTM's products, counted once per
    step of the sequence. The backward pass runs the same chain again: gradients get twice the
    bound.
    """
    depth = [int(np.log2(net.frontend.log_mel.n_fft)), net.frontend.log_mel.n_bins]
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            depth.append(module.in_channels * module.kernel_size[0] * module.kernel_size[1])
        elif isinstance(module, nn.Linear):
            depth.append(module.in_features)
        elif isinstance(module, nn.LSTM):
            depth.append(steps * module.num_layers * (module.input_size + module.hidden_size))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            depth.append(module.reduced_terms)
    return sum(depth) * unit_roundoff


def relative_error(ours, theirs) -> float:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-300))


def _count_batch_norm_terms(net: TorchTagger, audio: torch.Tensor) -> int:
    """Records on each batch norm the number of terms its statistics sum (batch x positions),
    and returns the number of LSTM steps (0 without an LSTM)."""
    hooks = [module.register_forward_hook(
        lambda module, inputs, output: setattr(module, "reduced_terms",
                                               inputs[0].numel() // inputs[0].shape[1]))
        for module in net.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        net(audio)  # the whole network: the head may have a batch norm too (short_res)
        frames = net.frontend(audio)
    for hook in hooks:
        hook.remove()
    return frames.shape[1] if isinstance(net.summary, TorchLSTMSummary) else 0


def _jax_logits_loss_grads(model, variables, audio, labels):
    def loss_fn(params):
        logits, _ = model.apply({**variables, "params": params}, audio, train=True,
                                mutable=["batch_stats"])
        return optax.sigmoid_binary_cross_entropy(logits, labels).mean(), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
    return logits, loss, grads


def _torch_logits_loss(net, audio, labels):
    net.train()
    net.zero_grad()
    logits = net(torch.from_numpy(audio))
    loss = F.binary_cross_entropy_with_logits(logits, torch.from_numpy(labels))
    loss.backward()
    return logits.detach().numpy(), loss.item()


def check_parity(model, variables, net, audio, labels) -> dict:
    """tagjax and PyTorch from the same weights on the same batch, dropout off (asserted).

    In float32 (the precision that is timed): logits and loss within `tolerance`. In float64
    (both networks cast), where rounding cannot hide a difference of structure: logits, loss and
    every parameter's gradient (relative to that gradient's largest entry) within the same
    bound taken at float64's unit roundoff. Gradients are not compared in float32: the
    gradients of the early layers come out of sums with heavy cancellation (batch norm's
    backward pass subtracts the means), where float32 keeps only a few digits relative to the
    result, whatever the library.
    """
    steps = _count_batch_norm_terms(net, torch.from_numpy(audio))
    result = {}
    for name, dtype, roundoff in (("float32", np.float32, FLOAT32_UNIT_ROUNDOFF),
                                  ("float64", np.float64, 2.0**-53)):
        bound = tolerance(net, steps, roundoff)
        with jax.enable_x64(dtype == np.float64):
            cast = jax.tree.map(lambda a, dtype=dtype: jnp.asarray(a, dtype), variables)
            logits, loss, grads = _jax_logits_loss_grads(model, cast, audio.astype(dtype),
                                                         labels.astype(dtype))
            net_copy = copy.deepcopy(net).to(torch.float64 if dtype == np.float64 else
                                             torch.float32)
            torch_logits, torch_loss = _torch_logits_loss(net_copy, audio.astype(dtype),
                                                          labels.astype(dtype))
            row = dict(bound=bound, logits=relative_error(logits, torch_logits),
                       loss=relative_error(loss, torch_loss))
            if dtype == np.float64:
                row["gradients_bound"] = 2 * bound
                pairs = [(value, tensor.grad.numpy()) for tensor, value
                         in weight_pairs(net_copy, jax.tree.map(np.asarray, grads))]
                largest = max(np.abs(theirs).max() for _, theirs in pairs)
                # A gradient that is zero by construction (a dense layer's bias before a batch
                # norm, which subtracts it again) is rounding noise on both sides: compared
                # against the network's largest gradient instead of its own.
                row["gradients"] = max(
                    relative_error(ours, theirs) if np.abs(theirs).max() > 2 * bound * largest
                    else float(np.abs(ours - theirs).max() / largest) for ours, theirs in pairs)
                assert row["gradients"] <= 2 * bound, (name, row)
        assert row["logits"] <= bound and row["loss"] <= bound, (name, row)
        result[name] = row
    return result


# --- timing ------------------------------------------------------------------------------------


def learning_rates(config, steps: int) -> np.ndarray:
    schedule = train._learning_rate(config, STEPS_PER_EPOCH)
    return np.asarray([float(schedule(i)) for i in range(steps)], np.float64)


class TorchStep:
    """One PyTorch training step: forward, BCE, backward, AdamW (the config's schedule)."""

    def __init__(self, net, config, lrs, compiled: bool):
        self.net = copy.deepcopy(net).train()
        if compiled:
            # A fresh start per network: otherwise the layer code shared with the previous
            # config is traced again with dynamic sizes, which Inductor fails to compile.
            torch._dynamo.reset()
        self.forward = torch.compile(self.net) if compiled else self.net
        self.lrs, self.step = lrs, 0
        trained = [p for p in self.net.parameters() if p.requires_grad]
        # optax.adamw's defaults: betas (0.9, 0.999), eps 1e-8, decay on every parameter.
        self.optimizer = torch.optim.AdamW(trained, lr=float(lrs[0]),
                                           weight_decay=config.optimizer.weight_decay,
                                           fused=True)

    def __call__(self, audio, labels):
        for group in self.optimizer.param_groups:
            group["lr"] = float(self.lrs[self.step % len(self.lrs)])
        self.optimizer.zero_grad(set_to_none=True)
        loss = F.binary_cross_entropy_with_logits(self.forward(audio), labels)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return loss.item()


def _model(name: str, batch: int, quiet: bool = False):
    """The config and its tagjax model; `quiet`: dropout off (for the parity check)."""
    config = configs.get(name)
    config.batch_size = batch
    if quiet:
        config = config.copy_and_resolve_references()
        for part in ("frontend", "summary", "head"):
            if "dropout" in config.model[part]:
                config.model[part].dropout = 0.0
    return config, train.tj_models.build(train._model_config(config, NUM_TAGS))


def _timed(run, first: int, n: int) -> tuple[list, list]:
    """Wall and CPU seconds (every thread of this process) of steps `first` to `first + n`."""
    times, cpu_times = [], []
    for i in range(first, first + n):
        start, cpu_start = time.perf_counter(), time.process_time()
        run(i)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return times, cpu_times


def tagjax_candidates(name: str, args, variables, audio, labels) -> tuple[dict, dict]:
    """{"tagjax": run(i)}, the trainer's jitted step on batch `i % 2`, and its compile time."""
    config, model = _model(name, args.batch)
    tx = train._optimizer(config, steps_per_epoch=STEPS_PER_EPOCH, params=variables["params"])
    state = train.create_state(config, tx, jax.tree.map(jnp.asarray, variables))
    jax_step = xla_options.jit(train.make_train_step(model, tx), donate_argnums=0)
    jax_batches = [{"audio": jnp.asarray(a), "labels": jnp.asarray(y)}
                   for a, y in zip(audio, labels, strict=True)]
    start = time.perf_counter()
    jax_compiled = jax_step.lower(state, jax_batches[0]).compile()
    compile_s = {"tagjax": time.perf_counter() - start}
    holder = {"state": state}

    def run_jax(i):
        holder["state"], metrics = jax_compiled(holder["state"], jax_batches[i % 2])
        jax.block_until_ready(metrics)

    return {"tagjax": run_jax}, compile_s


def torch_candidates(name: str, args, variables, audio, labels) -> tuple[dict, dict]:
    """{"torch eager": run(i)[, "torch compile": run(i)]} from tagjax's initial `variables`,
    and the compile time."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config, model = _model(name, args.batch)
    net = torch_model(model)
    load_weights(net, variables)
    lrs = learning_rates(config, 4 * STEPS_PER_EPOCH)
    torch_batches = [(torch.from_numpy(a), torch.from_numpy(y))
                     for a, y in zip(audio, labels, strict=True)]
    eager = TorchStep(net, config, lrs, compiled=False)
    candidates = {"torch eager": lambda i: eager(*torch_batches[i % 2])}
    eager(*torch_batches[0])
    start = time.perf_counter()
    eager(*torch_batches[1])
    eager_s = time.perf_counter() - start
    compile_s = {}
    if args.compile:
        compiled = TorchStep(net, config, lrs, compiled=True)
        start = time.perf_counter()
        compiled(*torch_batches[0])
        compile_s["torch compile"] = time.perf_counter() - start - eager_s
        compiled(*torch_batches[1])  # a second trace may follow the first (dynamic shapes)
        candidates["torch compile"] = lambda i: compiled(*torch_batches[i % 2])
    return candidates, compile_s


_SIDES = {"tagjax": tagjax_candidates, "torch": torch_candidates}


def side_turns(side: str, name: str, args, variables, audio, labels) -> tuple[dict, dict]:
    """One side's candidates, each warmed up by `--warmup-steps` untimed steps (its first steps
    after compiling are slower: memory still being mapped, caches cold), as `{key: turn(first,
    n)}` (`_timed`), and their compile times."""
    candidates, compile_s = _SIDES[side](name, args, variables, audio, labels)
    for candidate in candidates.values():
        _timed(candidate, 0, args.warmup_steps)
    return {key: functools.partial(_timed, run) for key, run in candidates.items()}, compile_s


def run_config(name: str, args) -> dict:
    config, model = _model(name, args.batch)
    variables = train.initial_variables(model, config)
    rng = np.random.default_rng(0)
    crop = train._crop_samples(config)
    audio = [(0.1 * rng.standard_normal((args.batch, crop))).astype(np.float32) for _ in range(2)]
    labels = [rng.integers(0, 2, (args.batch, NUM_TAGS)).astype(np.float32) for _ in range(2)]

    net = torch_model(model)
    load_weights(net, variables)
    jax_params = int(sum(x.size for x in jax.tree.leaves(variables["params"])))
    assert trained_parameters(net) == jax_params, (trained_parameters(net), jax_params)

    # Parity: the same networks with dropout off, from the same weights, on the same batch.
    _, quiet_model = _model(name, args.batch, quiet=True)
    quiet_net = torch_model(quiet_model)
    load_weights(quiet_net, variables)
    parity = check_parity(quiet_model, variables, quiet_net, audio[0], labels[0])
    variables = jax.tree.map(np.asarray, variables)

    # Each side in a process of its own, unless --same-process.
    steps, compile_s, workers = start_sides(side_turns, _SIDES, name, args, variables, audio,
                                            labels, same_process=args.same_process)
    times = {key: [] for key in steps}
    cpu_times = {key: [] for key in steps}  # the CPU seconds of the candidate's process a step
    ratios = []
    names = list(steps)
    for round_index in range(args.rounds):
        order = names[round_index % len(names):] + names[:round_index % len(names)]
        round_times = {}
        for key in order:
            values, cpu_values = steps[key](round_index * args.steps_per_round,
                                            args.steps_per_round)
            times[key] += values
            cpu_times[key] += cpu_values
            round_times[key] = statistics.median(values)
        best_torch = min(v for k, v in round_times.items() if k != "tagjax")
        ratios.append(best_torch / round_times["tagjax"])
    for worker in workers:
        worker.close()
    medians = {key: 1e3 * statistics.median(values) for key, values in times.items()}
    cpu_medians = {key: 1e3 * statistics.median(values) for key, values in cpu_times.items()}
    best = min((k for k in medians if k != "tagjax"), key=medians.get)
    return dict(config=name, batch=args.batch, crop_seconds=config.crop_seconds,
                trained_parameters=jax_params, parity=parity, compile_s=compile_s,
                step_ms=medians, step_cpu_ms=cpu_medians, steps_timed=len(times["tagjax"]),
                torch_best=best,
                ratio_torch_best_over_tagjax=statistics.median(ratios),
                ratio_per_round=ratios,
                all_ms={k: [1e3 * v for v in values] for k, values in times.items()})


def environment() -> dict:
    """The machine and libraries a run measured, for its JSON."""
    return dict(platform=platform.platform(), cpu=cpu_description(), cpus=os.cpu_count(),
                torch_threads=torch.get_num_threads(), jax=jax.__version__,
                torch=torch.__version__, device=str(jax.devices()[0]),
                load_average=os.getloadavg()[0],
                allocator=allocator.in_effect())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps-per-round", dest="steps_per_round", type=int, default=4)
    parser.add_argument("--warmup-steps", dest="warmup_steps", type=int, default=3,
                        help="untimed steps of each candidate before the rounds")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--same-process", dest="same_process", action="store_true",
                        help="run both sides in this process (by default each has its own)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for name in args.configs.split(","):
        rows.append(run_config(name, args))
        row = rows[-1]
        p32, p64 = row["parity"]["float32"], row["parity"]["float64"]
        print(f"{name}: |tagjax - torch| / max, float32: logits {p32['logits']:.1e}, loss "
              f"{p32['loss']:.1e} (bound {p32['bound']:.1e}); float64: logits "
              f"{p64['logits']:.1e}, loss {p64['loss']:.1e} (bound {p64['bound']:.1e}), "
              f"gradients {p64['gradients']:.1e} (bound {p64['gradients_bound']:.1e})",
              flush=True)

    print(f"\ntraining step, batch {args.batch}, median of {rows[0]['steps_timed']} steps each "
          f"({args.rounds} alternating rounds); torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'config':<10} {'params':>10} {'tagjax ms':>10} {'eager ms':>9} {'compile ms':>11} "
          f"{'torch best / tagjax':>20} {'compile s (jax, torch)':>23}")
    for row in rows:
        ms, cs = row["step_ms"], row["compile_s"]
        compiled_ms = f"{ms['torch compile']:11.1f}" if "torch compile" in ms else f"{'-':>11}"
        torch_cs = f"{cs['torch compile']:.1f}" if "torch compile" in cs else "-"
        print(f"{row['config']:<10} {row['trained_parameters']:>10,} {ms['tagjax']:10.1f} "
              f"{ms['torch eager']:9.1f} {compiled_ms} "
              f"{row['ratio_torch_best_over_tagjax']:19.2f}x "
              f"{cs['tagjax']:>10.1f}, {torch_cs:>10}")
    print("ratio: median over rounds of (faster PyTorch mode's median) / (tagjax's median); "
          "above 1, tagjax is faster.")
    # Where the step is bound by arithmetic on every core, CPU time ~ cores x wall time: a gap
    # there is work, not waiting.
    print(f"\nCPU time a step (all threads, median ms; {os.cpu_count()} CPUs)")
    for row in rows:
        cpu = ", ".join(f"{key} {value:.1f} ({value / row['step_ms'][key]:.2f} cores)"
                        for key, value in row["step_cpu_ms"].items())
        print(f"{row['config']:<10} {cpu}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(
        environment=environment(),
        settings=dict(batch=args.batch, rounds=args.rounds, steps_per_round=args.steps_per_round,
                      warmup_steps=args.warmup_steps, compile=args.compile,
                      same_process=args.same_process),
        results=rows), indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    # Both sides run under the allocator of tagjax's commands (tagjax/allocator.py).
    allocator.reexecute()
    main()
