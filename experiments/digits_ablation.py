"""Ablation of the digits recipe (``configs/ve/digits_u.py``): each run changes some fields of
the recipe, trains through ``main.py``'s code path (``--mode=train``, which for image configs
does not evaluate), draws 1,000 samples with ``--mode=sample`` and judges them with
``experiments/digits_measure.py``'s classifier and criteria.

    python experiments/digits_ablation.py --workdir runs/digits_ablation \\
        --run recipe= --run ema_0.999=optim.ema_warmup=none \\
        --run raw=optim.ema_rate=0 ... --out docs/results/digits.md

``--run NAME=FIELD=VALUE,FIELD=VALUE`` (values parsed as JSON where they are, else strings;
``NAME=`` is the recipe itself); ``--run NAME@BASE=...`` samples the trained checkpoint of the
earlier run ``BASE`` with other sampling fields, training nothing. A run folder trained and
sampled by ``experiments/digits_measure.py --train`` keeps that script's timings. Each run's
results go to ``WORKDIR/NAME/ablation.json`` as it finishes, so a killed study resumes with the
runs it has not done; ``--out`` puts the table in the results file's section "## Ablation"
(``report.write_section``) and every row in ``digits_ablation.json`` beside it. Train and sample
times are wall clock on this machine, with the 1-minute load average at the end of each run,
since other work on the machine slows them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "experiments"))

import main as entry  # noqa: E402
from digits_demo import load_config  # noqa: E402
from digits_measure import (CONFIG, IMAGE_SIZE, NUM_SAMPLES, fit_judge,  # noqa: E402
                            latest_samples, measure_images)
from report import command_line, write_section  # noqa: E402
from sgm_jax import plots  # noqa: E402
from sgm_jax.data.images import resize_images  # noqa: E402

SECTION = "## Ablation"


def judged_images(samples: np.ndarray) -> np.ndarray:
    """Samples at the judge's 8×8: a model of the 16×16 upsampled digits is judged on its
    samples resized back to 8×8 (``resize_images``: the antialiased bilinear resize of the data
    loader, here downwards)."""
    if samples.shape[1] == IMAGE_SIZE:
        return samples
    return resize_images(samples, IMAGE_SIZE)


def run_one(overrides: str, workdir: str, judge, base: str | None = None) -> dict:
    """Trains and samples the recipe with ``overrides`` in ``workdir`` and measures the samples
    (resuming a run that has a result: it is returned as stored). With ``base`` (the workdir of
    another run) nothing is trained: the run starts from a copy of ``base``'s checkpoints, so
    only the sampling fields of ``overrides`` (and ``training.n_iters`` equal to ``base``'s) may
    differ from ``base``'s, and its train time is ``base``'s."""
    result_path = os.path.join(workdir, "ablation.json")
    if os.path.exists(result_path):
        with open(result_path) as f:
            return json.load(f)
    config = load_config(f"{CONFIG}:{overrides}")
    if base is not None and not os.path.isdir(os.path.join(workdir, "checkpoints")):
        shutil.copytree(os.path.join(base, "checkpoints"), os.path.join(workdir, "checkpoints"))
    start, cpu = time.perf_counter(), time.process_time()
    entry.run(config, "train", workdir)
    train_s, train_cpu_s = time.perf_counter() - start, time.process_time() - cpu
    load, sample_s = os.getloadavg()[0], None
    if base is not None:
        with open(os.path.join(base, "ablation.json")) as f:
            trained = json.load(f)
        train_s, train_cpu_s = trained["train_s"], trained.get("train_cpu_s")
    measured = os.path.join(workdir, "measure.json")
    if base is None and os.path.exists(measured):  # trained and sampled by digits_measure --train
        with open(measured) as f:
            timings = json.load(f)["timings"]
        train_s, train_cpu_s = timings["train"]["wall_s"], timings["train"]["cpu_s"]
        sample_s, load = timings["sample"]["wall_s"], timings["train"]["load_after"]
    config.sampling.num_samples = NUM_SAMPLES
    samples_path = latest_samples(workdir)
    if samples_path is None:
        start = time.perf_counter()
        samples_path = entry.run(config, "sample", workdir)
        sample_s = time.perf_counter() - start
    samples = judged_images(np.load(samples_path)["images"])
    row = {"overrides": overrides, "steps": config.training.n_iters, "train_s": train_s,
           "train_cpu_s": train_cpu_s, "sample_s": sample_s, "load": load,
           "trained_as": None if base is None else os.path.basename(base),
           **measure_images(judge, samples)}
    with open(result_path, "w") as f:
        json.dump(row, f, indent=2)
    return row


def _seconds(value) -> str:
    return "—" if value is None else f"{value:.0f}"


def markdown(rows: dict[str, dict], command: str, accuracy: float) -> str:
    lines = [
        SECTION, "",
        "Each row changes the recipe (`configs/ve/digits_u.py`, row \"recipe\") in the fields "
        "named, "
        f"trains it, draws {NUM_SAMPLES} samples with `--mode=sample`'s sampler and judges them "
        f"as above (judge accuracy {accuracy:.1%}; data: FID ratio 1 by definition). Train and "
        "sample times are wall clock on the 2-core machine, "
        "load = the 1-minute load average at the end of the run (other work shared the machine "
        "when it is above 2); CPU time is the process's user + system time, less sensitive to "
        "that sharing.", "",
        "| run | changes | train (s) | train CPU (s) | sample (s) | load | p ≥ 0.9 | "
        "smallest class | largest class | FID (clf) | × data | pixel mean | pixel std | passes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        changes = f"`{r['overrides']}`" if r["overrides"] else "—"
        if r.get("trained_as"):
            changes += f" (sampling only: the checkpoint of {r['trained_as']})"
        lines.append(
            f"| {name} | {changes} | {_seconds(r['train_s'])} | {_seconds(r.get('train_cpu_s'))} | "
            f"{_seconds(r['sample_s'])} | "
            f"{r['load']:.1f} | {r['confident']:.1%} | {r['min_class_count']} | "
            f"{r['max_share']:.1%} | {r['fid']:.2f} | {r['fid_ratio']:.2f} | "
            f"{r['pixel_mean']:.3f} | {r['pixel_std']:.3f} | {'yes' if r['passed'] else 'no'} |")
    lines += ["", "Command:", "", "```bash", command, "```", ""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", action="append", required=True,
                        metavar="NAME=FIELD=VALUE,...")
    parser.add_argument("--workdir", default="runs/digits_ablation")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    runs = dict(item.split("=", 1) for item in args.run)
    judge = fit_judge()
    rows = {}
    for label, overrides in runs.items():
        name, _, base = label.partition("@")
        if base and base not in rows:
            raise ValueError(f"--run {label}: {base!r} must be a run listed before it.")
        workdir = os.path.join(args.workdir, name)
        rows[name] = run_one(overrides, workdir, judge,
                             os.path.join(args.workdir, base) if base else None)
        r = rows[name]
        print(f"{name}: train {_seconds(r['train_s'])} s, p>=0.9 {r['confident']:.3f}, classes "
              f"{r['class_counts']}, FID x{r['fid_ratio']:.2f}, failures {r['failures']}",
              flush=True)
        samples = np.load(latest_samples(workdir))["images"][:100]
        plots.save_image_grid(os.path.join(workdir, "samples_100.png"),
                              samples.astype(np.float32) / 255.0)
    if args.out:
        command = command_line("experiments/digits_ablation.py", argv)
        write_section(args.out, SECTION, markdown(rows, command, judge.accuracy))
        with open(os.path.join(os.path.dirname(args.out), "digits_ablation.json"), "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
