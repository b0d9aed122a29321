"""The library's NCSN++ deep train step against the official PyTorch implementation of the same
network and step (score_sde_pytorch), timed interleaved round by round.

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
The worker reports its network's parameter count, which must equal the library's.

score_sde_pytorch builds its FIR up/down-sampling CUDA kernels when ``op`` is imported; on a CPU
its ``upfirdn2d`` runs the plain PyTorch path instead, so the worker skips that build.

    python benchmarks/score_sde_pytorch.py --score-sde-pytorch ../score_sde_pytorch \\
        --torch-python ../torch-env/bin/python --batch 4 --mock-data
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------- the PyTorch worker


def worker(source: str, batch: int, nf: int, num_res_blocks: int) -> None:
    """Serve score_sde_pytorch train steps: after ``ready <parameter count> <torch version>``,
    each line ``n`` on standard input runs n steps and answers ``done <loss>``; an empty line ends
    the worker."""
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
    for line in sys.stdin:
        if not line.strip():
            break
        for _ in range(int(line)):
            loss = step_fn(state, data)
        print(f"done {loss.item():.6g}", flush=True)


class PeerStep:
    """A zero-argument callable running ``steps`` train steps in the worker process."""

    def __init__(self, args):
        command = [args.torch_python, os.path.abspath(__file__), "--worker",
                   "--score-sde-pytorch", os.path.abspath(args.score_sde_pytorch),
                   "--batch", str(args.batch), "--nf", str(args.nf),
                   "--num-res-blocks", str(args.num_res_blocks)]
        self.steps = args.steps
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, cwd=args.score_sde_pytorch)
        parameters, self.torch_version = self._answer("ready")
        self.parameters = int(parameters)

    def _answer(self, word: str) -> list[str]:
        line = self.process.stdout.readline().split()
        if not line or line[0] != word:
            raise RuntimeError(f"the score_sde_pytorch worker stopped (exit status "
                               f"{self.process.poll()}); expected {word!r}, got {line!r}.")
        return line[1:]

    def __call__(self) -> float:
        self.process.stdin.write(f"{self.steps}\n")
        self.process.stdin.flush()
        return float(self._answer("done")[0])

    def close(self) -> None:
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        self.process.wait(timeout=60)


# --------------------------------------------------------------------------- the comparison


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--score-sde-pytorch", required=True,
                        help="a checkout of score_sde_pytorch")
    parser.add_argument("--torch-python", default=sys.executable,
                        help="the Python of an environment with torch (default: this one)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--nf", type=int, default=128)
    parser.add_argument("--num-res-blocks", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2, help="train steps per timed unit")
    parser.add_argument("--rounds", type=int, default=3)
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
        return worker(args.score_sde_pytorch, args.batch, args.nf, args.num_res_blocks)

    sys.path.insert(0, ROOT)
    from benchmarks.images import qcsgm_config
    from benchmarks.timing import TrainStepRunner, compare, image_data, write_json
    from sgm_jax.experiment import build_experiment
    from sgm_jax.models.registry import param_count

    config = qcsgm_config("cifar10_u", args, args.batch)
    with image_data(args.mock_data, args.batch):
        experiment = build_experiment(config)
    ours = TrainStepRunner(experiment, calls=args.steps)
    parameters = param_count(config)
    peer = PeerStep(args)
    try:
        if peer.parameters != parameters:
            raise RuntimeError(f"the networks differ: {parameters} parameters here, "
                               f"{peer.parameters} in score_sde_pytorch.")
        start = time.perf_counter()
        result = compare({"sgm_jax": ours, "score_sde_pytorch": peer}, "score_sde_pytorch",
                         rounds=args.rounds, repeats=1, warmup=1)
        result["seconds"] = time.perf_counter() - start
    finally:
        peer.close()
    rows = {name: {k: v for k, v in row.items() if not k.startswith("cpu_")}  # wall time only
            for name, row in result["steps"].items()}
    print(f"NCSN++ deep train step, nf {args.nf}, {args.num_res_blocks} blocks, batch "
          f"{args.batch}, {parameters:,} parameters, {args.steps} steps per unit, "
          f"{args.rounds} interleaved rounds (1-min load {result['load_average_before'][0]:.2f} "
          f"before, {result['load_average_after'][0]:.2f} after); sgm_jax compiled in "
          f"{ours.compile_seconds:.1f} s")
    for name, row in rows.items():
        print(f"  {name:18s} {row['median_ms'] / args.steps / 1e3:8.2f} s/step  "
              f"{row['ratio_median']:5.2f} × score_sde_pytorch "
              f"({row['ratio_min']:.2f}–{row['ratio_max']:.2f})")
    write_json(args.json, {"nf": args.nf, "num_res_blocks": args.num_res_blocks,
                           "batch": args.batch, "steps_per_unit": args.steps,
                           "parameters": parameters, "torch": peer.torch_version,
                           "sgm_jax_compile_s": ours.compile_seconds,
                           **{**result, "steps": rows}})
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
