"""The library's NCSN++ deep train step against the official PyTorch implementation of the same
network and step (score_sde_pytorch), timed interleaved round by round, and profiled per group of
operations.

The two steps run in two processes, so that neither framework's modules or thread pools meet the
other's: this process times the library's U step of ``configs/ve/cifar10_u.py`` (NCSN++ deep
continuous, VE; ``benchmarks.timing.TrainStepRunner``), and a worker process, started with the
Python of an environment that has torch (``--torch-python``; e.g. one with this repository's
``parity`` extra), runs score_sde_pytorch's own training step from a checkout of that repository
(``--score-sde-pytorch``): its ``configs/ve/cifar10_ncsnpp_deep_continuous.py`` at the same
width, batch and image size, ``losses.get_step_fn`` (continuous DSM, summed over dimensions),
``losses.optimization_manager`` (warm-up, gradient clipping, Adam) and ``models.ema``. Both steps
are timed by :func:`benchmarks.timing.compare`: units of ``--steps`` train steps, each framework
waiting while the other runs; the ratio is the median per-round ratio of the wall times (the
process CPU time of this process does not see the worker's work, so only wall time is reported).
The worker reports its network's parameter count, which must equal the library's. Each batch
size of ``--batch`` is a separate comparison (its own compiled step and worker).

``--profile`` then runs one timed unit of each under its framework's profiler and
sums the operations' times per group (``benchmarks.op_profile.GROUPS``): for the library XLA's
per-instruction thunk times (``benchmarks.op_profile.profile_program``); for PyTorch the self CPU
time of every operator in ``torch.profiler``, grouped by the score_sde_pytorch function or torch
module that ran it (GroupNorm, Dropout, ``upfirdn2d``, ``AttnBlockpp``, the EMA and clipping, the
optimiser), a backward operator by the forward operator whose gradient it computes (autograd's
sequence numbers), and every convolution outside ``upfirdn2d`` as a convolution
(:func:`torch_profile`).

The library's process is set as ``main.py`` sets its own for ``configs/ve/cifar10_u.py``
(``benchmarks.process_settings``: freed host memory kept, :mod:`sgm_jax.host_memory`, and
elementwise fusions in YNNPACK, :mod:`sgm_jax.xla_cpu`) unless the arguments say otherwise; the
worker keeps glibc's defaults, as score_sde_pytorch runs, unless ``--peer-keep-freed-host-memory``
gives it the library's ``malloc`` setting.

score_sde_pytorch builds its FIR up/down-sampling CUDA kernels when ``op`` is imported; on a CPU
its ``upfirdn2d`` runs the plain PyTorch path instead, so the worker skips that build.

    python benchmarks/score_sde_pytorch.py --score-sde-pytorch ../score_sde_pytorch \\
        --torch-python ../torch-env/bin/python --batch 4 --mock-data
    python benchmarks/score_sde_pytorch.py ... --batch 4 8 --steps 1 --profile
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.process_settings import (add_process_arguments,  # noqa: E402 (no JAX import)
                                         set_process_as_main)
from benchmarks.op_profile import GROUP_TITLES, GROUPS  # noqa: E402 (no JAX import)

#: Unlabelled PyTorch operators that only move data (the "layout" group).
TORCH_LAYOUT = ("aten::copy_", "aten::clone", "aten::contiguous", "aten::_to_copy", "aten::to")


# --------------------------------------------------------------------------- the PyTorch worker


def _label_groups() -> None:
    """Run the torch modules and score_sde_pytorch functions of each group of operations in a
    profiler range ``group:<group>`` (torch already names the optimiser's ranges)."""
    import torch
    from models import layerspp, up_or_down_sampling
    from models.ema import ExponentialMovingAverage

    def labelled(function, group):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            with torch.profiler.record_function(f"group:{group}"):
                return function(*args, **kwargs)
        return wrapper

    torch.nn.GroupNorm.forward = labelled(torch.nn.GroupNorm.forward, "normalisation")
    torch.nn.Dropout.forward = labelled(torch.nn.Dropout.forward, "dropout")
    up_or_down_sampling.upfirdn2d = labelled(up_or_down_sampling.upfirdn2d, "fir")
    layerspp.AttnBlockpp.forward = labelled(layerspp.AttnBlockpp.forward, "attention")
    ExponentialMovingAverage.update = labelled(ExponentialMovingAverage.update, "optimizer")
    torch.nn.utils.clip_grad_norm_ = labelled(torch.nn.utils.clip_grad_norm_, "optimizer")


def _torch_group(event, forward_groups: dict[int, str]) -> str:
    """The group of one operator event of ``torch.profiler``: the innermost labelled range around
    it, or for a backward operator that of the forward operator of its autograd node; a
    convolution outside ``upfirdn2d`` is a convolution."""
    group, node, conv = None, None, False
    parent = event
    while parent is not None:
        name = parent.name
        conv = conv or "conv" in name.lower()
        if group is None and name.startswith("group:"):
            group = name[len("group:"):]
        elif group is None and name.startswith("Optimizer."):
            group = "optimizer"
        if node is None and name.rstrip("0123456789").endswith("Backward") and (
                parent.sequence_nr >= 0):
            node = parent
        parent = parent.cpu_parent
    if group is None and node is not None:
        group = forward_groups.get(node.sequence_nr)
    if conv and group != "fir":
        return "convolution"
    if group is None:
        return "layout" if event.name in TORCH_LAYOUT else "elementwise"
    return group


def torch_profile(run, steps: int) -> dict:
    """Run ``run`` (``steps`` train steps) under ``torch.profiler`` and return, as
    :func:`benchmarks.op_profile.profile_program`, the self CPU time per step of the operators of
    each group (``groups``), their sum (``total_s``), the profiled wall time per step (``wall_s``)
    and the ten longest operators (``top``)."""
    import torch

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        run()
        wall = time.perf_counter() - start
    events = prof.events()
    forward_groups = {}
    for event in events:  # forward operators: those that made an autograd node
        if event.sequence_nr >= 0 and not event.name.rstrip("0123456789").endswith("Backward"):
            group = _torch_group(event, {})
            forward_groups.setdefault(event.sequence_nr, group)
    per_group, per_name = dict.fromkeys(GROUPS, 0.0), {}
    for event in events:
        seconds = event.self_cpu_time_total * 1e-6 / steps
        group = _torch_group(event, forward_groups)
        per_group[group] += seconds
        key = (event.name, group)
        per_name[key] = per_name.get(key, 0.0) + seconds
    top = sorted(([name, group, s] for (name, group), s in per_name.items()),
                 key=lambda row: -row[2])[:10]
    return dict(groups=per_group, total_s=sum(per_group.values()), wall_s=wall / steps, top=top)


def worker(source: str, batch: int, nf: int, num_res_blocks: int,
           keep_freed_memory: bool = False) -> None:
    """Serve score_sde_pytorch train steps: after ``ready <parameter count> <torch version>``,
    each line ``run n`` on standard input runs n steps and answers ``done <loss>``, each line
    ``profile n`` runs n steps under the profiler and answers ``profile <JSON of
    torch_profile>``; an empty line ends the worker. ``keep_freed_memory``: glibc's ``malloc``
    set as the library's processes set it (:mod:`sgm_jax.host_memory`) instead of its
    defaults."""
    if keep_freed_memory:
        from sgm_jax.host_memory import keep_freed_host_memory

        keep_freed_host_memory()
    import numpy as np
    import torch
    import torch.utils.cpp_extension

    torch.utils.cpp_extension.load = lambda *args, **kwargs: None  # CUDA kernels: unused on a CPU
    sys.path.insert(0, source)
    import losses  # noqa: E402 (score_sde_pytorch's modules)
    import sde_lib
    from configs.ve.cifar10_ncsnpp_deep_continuous import get_config
    from models import ncsnpp  # noqa: F401 (registers the model)
    from models import utils as mutils
    from models.ema import ExponentialMovingAverage

    config = get_config()
    config.model.nf, config.model.num_res_blocks = nf, num_res_blocks
    config.training.batch_size = batch
    config.device = torch.device("cpu")
    torch.manual_seed(config.seed)
    model = mutils.create_model(config)
    state = dict(model=model, step=0,
                 optimizer=losses.get_optimizer(config, model.parameters()),
                 ema=ExponentialMovingAverage(model.parameters(), decay=config.model.ema_rate))
    sde = sde_lib.VESDE(sigma_min=config.model.sigma_min, sigma_max=config.model.sigma_max,
                        N=config.model.num_scales)
    step_fn = losses.get_step_fn(sde, train=True, optimize_fn=losses.optimization_manager(config),
                                 reduce_mean=config.training.reduce_mean,
                                 continuous=config.training.continuous,
                                 likelihood_weighting=config.training.likelihood_weighting)
    shape = (batch, config.data.num_channels, config.data.image_size, config.data.image_size)
    data = torch.from_numpy(np.random.default_rng(0).uniform(size=shape).astype(np.float32))
    print(f"ready {sum(p.numel() for p in model.parameters())} {torch.__version__}", flush=True)
    labelled = False
    for line in sys.stdin:
        if not line.strip():
            break
        command, steps = line.split()
        if command == "profile":
            if not labelled:  # the timed steps run the code unchanged
                _label_groups()
                labelled = True
            result = torch_profile(lambda: [step_fn(state, data) for _ in range(int(steps))],
                                   int(steps))
            print(f"profile {json.dumps(result)}", flush=True)
            continue
        for _ in range(int(steps)):
            loss = step_fn(state, data)
        print(f"done {loss.item():.6g}", flush=True)


class PeerStep:
    """A zero-argument callable running ``steps`` train steps in the worker process."""

    def __init__(self, args, batch: int):
        command = [args.torch_python, os.path.abspath(__file__), "--worker",
                   "--score-sde-pytorch", os.path.abspath(args.score_sde_pytorch),
                   "--batch", str(batch), "--nf", str(args.nf),
                   "--num-res-blocks", str(args.num_res_blocks)] + (
                       ["--peer-keep-freed-host-memory"] if args.peer_keep_freed_host_memory
                       else [])
        self.steps = args.steps
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, cwd=args.score_sde_pytorch)
        parameters, self.torch_version = self._answer("ready")
        self.parameters = int(parameters)

    def _answer(self, word: str) -> list[str]:
        line = self.process.stdout.readline().split(maxsplit=1 if word == "profile" else -1)
        if not line or line[0] != word:
            raise RuntimeError(f"the score_sde_pytorch worker stopped (exit status "
                               f"{self.process.poll()}); expected {word!r}, got {line!r}.")
        return line[1:]

    def _send(self, line: str) -> None:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def __call__(self) -> float:
        self._send(f"run {self.steps}")
        return float(self._answer("done")[0])

    def profile(self, steps: int) -> dict:
        """:func:`torch_profile` of ``steps`` train steps in the worker."""
        self._send(f"profile {steps}")
        return json.loads(self._answer("profile")[0])

    def close(self) -> None:
        self._send("")
        self.process.wait(timeout=60)


# --------------------------------------------------------------------------- the comparison


def profile_table(ours: dict, theirs: dict, title: str) -> str:
    """The two per-group profiles side by side: ms per step, share of the profiled total, and
    the library's time over PyTorch's per group."""
    lines = [title, f"{'group':36s} {'sgm_jax ms':>11s} {'share':>6s}   "
             f"{'PyTorch ms':>11s} {'share':>6s}   {'× PyTorch':>9s}"]
    for group in GROUPS + ("total",):
        a = ours["total_s"] if group == "total" else ours["groups"][group]
        b = theirs["total_s"] if group == "total" else theirs["groups"][group]
        ratio = f"{a / b:9.2f}" if b > 0 else f"{'—':>9s}"
        lines.append(f"{GROUP_TITLES.get(group, group):36s} {1e3 * a:11.0f} "
                     f"{100 * a / ours['total_s']:5.1f}%   {1e3 * b:11.0f} "
                     f"{100 * b / theirs['total_s']:5.1f}%   {ratio}")
    lines.append(f"{'profiled wall time per step':36s} {1e3 * ours['wall_s']:11.0f} {'':6s}   "
                 f"{1e3 * theirs['wall_s']:11.0f}")
    return "\n".join(lines)


def compare_batch(args, batch: int) -> dict:
    """Time (and with ``--profile`` profile) both steps at global batch ``batch``."""
    from benchmarks.images import qcsgm_config
    from benchmarks.op_profile import profile_program
    from benchmarks.timing import TrainStepRunner, compare, image_data
    from sgm_jax.experiment import build_experiment
    from sgm_jax.models.registry import param_count

    config = qcsgm_config("cifar10_u", args, batch)
    with image_data(args.mock_data, batch):
        ours = TrainStepRunner(build_experiment(config), calls=args.steps)
    parameters = param_count(config)
    peer = PeerStep(args, batch)
    try:
        if peer.parameters != parameters:
            raise RuntimeError(f"the networks differ: {parameters} parameters here, "
                               f"{peer.parameters} in score_sde_pytorch.")
        start = time.perf_counter()
        result = compare({"sgm_jax": ours, "score_sde_pytorch": peer}, "score_sde_pytorch",
                         rounds=args.rounds, repeats=1, warmup=1)
        result["seconds"] = time.perf_counter() - start
        if args.profile:
            program = ours.compiled[id(ours.train_step.program(ours.step))]
            result["profile"] = {
                "sgm_jax": profile_program(ours, program.as_text(), ours.steps),
                "score_sde_pytorch": peer.profile(args.steps)}
    finally:
        peer.close()
    result["steps"] = {name: {k: v for k, v in row.items() if not k.startswith("cpu_")}
                       for name, row in result["steps"].items()}  # wall time only
    result.update(batch=batch, parameters=parameters, torch=peer.torch_version,
                  sgm_jax_compile_s=ours.compile_seconds,
                  sgm_jax_gflop_per_step=ours.gflop_per_step)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--score-sde-pytorch", required=True,
                        help="a checkout of score_sde_pytorch")
    parser.add_argument("--torch-python", default=sys.executable,
                        help="the Python of an environment with torch (default: this one)")
    parser.add_argument("--batch", type=int, nargs="+", default=[4],
                        help="global batch sizes, each compared on its own")
    parser.add_argument("--nf", type=int, default=128)
    parser.add_argument("--num-res-blocks", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2, help="train steps per timed unit")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true",
                        help="then profile one timed unit of each step per group of operations")
    add_process_arguments(parser)
    parser.add_argument("--peer-keep-freed-host-memory", action="store_true",
                        help="set glibc's malloc in the PyTorch worker as the library's "
                             "processes set it (sgm_jax.host_memory) instead of its defaults")
    parser.add_argument("--mock-data", action="store_true",
                        help="tfds mock images instead of the prepared CIFAR-10")
    parser.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results",
                                                       "score_sde_pytorch.json"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(args.score_sde_pytorch, "losses.py")):
        raise SystemExit(f"--score-sde-pytorch={args.score_sde_pytorch!r} is not a checkout of "
                         "score_sde_pytorch (no losses.py there).")
    if args.worker:
        return worker(args.score_sde_pytorch, args.batch[0], args.nf, args.num_res_blocks,
                      args.peer_keep_freed_host_memory)
    # before JAX starts its threads: as main.py sets its process for the timed config
    timed_config = importlib.import_module("configs.ve.cifar10_u").get_config()
    applied = set_process_as_main(args, timed_config)

    from benchmarks.timing import write_json

    results = {}
    for batch in args.batch:
        result = results[f"batch_{batch}"] = compare_batch(args, batch)
        print(f"NCSN++ deep train step, nf {args.nf}, {args.num_res_blocks} blocks, batch "
              f"{batch}, {result['parameters']:,} parameters, {args.steps} steps per unit, "
              f"{args.rounds} interleaved rounds (1-min load "
              f"{result['load_average_before'][0]:.2f} before, "
              f"{result['load_average_after'][0]:.2f} after); sgm_jax compiled in "
              f"{result['sgm_jax_compile_s']:.1f} s")
        for name, row in result["steps"].items():
            print(f"  {name:18s} {row['median_ms'] / args.steps / 1e3:8.2f} s/step  "
                  f"{row['ratio_median']:5.2f} × score_sde_pytorch "
                  f"({row['ratio_min']:.2f}–{row['ratio_max']:.2f})")
        if args.profile:
            profile = result["profile"]
            print(profile_table(profile["sgm_jax"], profile["score_sde_pytorch"],
                                f"\nper group, ms per step (batch {batch}, "
                                f"{args.steps} profiled steps each)"))
        print(flush=True)
    write_json(args.json, {"nf": args.nf, "num_res_blocks": args.num_res_blocks,
                           "steps_per_unit": args.steps,
                           "glibc_malloc_defaults": args.glibc_malloc_defaults, **applied,
                           "peer_keep_freed_host_memory": args.peer_keep_freed_host_memory,
                           **results})
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
