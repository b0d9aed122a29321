"""Fast samplers and controllable generation on the digits models of the offline demonstration
(``configs/ve/digits_{u,qc}.py``), for U and QC.

For every run ``NAME=CONFIG[:FIELD=VALUE,...]`` the model is trained through the library's train
loop when ``WORKDIR/NAME`` holds no checkpoint of its ``training.n_iters`` (``sgm_jax.train``;
``experiments/digits_demo.py`` trains the same runs in the same folders; ``--use-latest`` takes
the latest checkpoint as it is instead), then, with its EMA parameters:

* **Unconditional samples** from Heun on EDM's noise levels (N = 10, 18, 35; NFE 2N − 1), DDIM
  (η = 0; N = 10, 50, 100) and the PC sampler at N = 1000 (reverse diffusion + Langevin, NFE
  2000): ``--num-samples`` samples each through ``evaluate.images.BatchSampler`` (the program of
  ``--mode=eval``), their FID, precision and recall (k = 3) against the test split in the
  feature space of the library's digits classifier (``sgm_jax.metrics.feature_classifier``, as
  ``experiments/digits_demo.py``; not Inception FIDs), the NFE and the wall time per sample
  (median over the batches after the first, which compiles).
* **Completion** of the first ``--num-tasks`` test images through ``evaluate.tasks.task_program``
  (the program of ``--mode=sample``): inpainting of the centre square and of the left half (PC
  imputation with the config's sampler, N = ``sde.num_scales``) and 2× super-resolution by DPS
  (2 × 2 average pooling, σ_y = ``--dps-noise``, ``--dps-steps`` steps; ζ chosen from
  ``--zetas`` by PSNR on the ``--num-tasks`` test images that follow, which are not scored,
  when more than one is given).
  Reported: PSNR against the ground truth and the digits classifier's accuracy on the completed
  images (the label of the original), with the same for the inputs themselves (the masked image
  with its hole grey, the low-resolution image repeated) and the originals; pictures of input,
  output and truth.

    python experiments/sampling_study.py --workdir runs/digits \\
        --run u=configs/ve/digits_u.py --run qc=configs/ve/digits_qc.py \\
        --out docs/results/sampling.md

``--add`` keeps the runs of an earlier ``OUT``'s JSON made with the same settings (so that runs
can be sampled as they finish training); ``--tiny`` runs everything at toy size (a 4-step model,
few samples) to test the script.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402

from digits_demo import load_config, quality  # noqa: E402
from report import command_line, write_keeping_discussion  # noqa: E402
from sgm_jax import parallel, plots, train  # noqa: E402
from sgm_jax.checkpoints import checkpoint_dir, load_checkpoint, manager  # noqa: E402
from sgm_jax.data import get_data_scaler  # noqa: E402
from sgm_jax.data.images import load_split  # noqa: E402
from sgm_jax.experiment import build_experiment  # noqa: E402
from sgm_jax.evaluate.images import BatchSampler, host_array, to_uint8  # noqa: E402
from sgm_jax.metrics.feature_classifier import (FEATURE_SEED, FEATURE_STEPS,  # noqa: E402
                                                fit_feature_space)
from sgm_jax.evaluate.tasks import task_program, triptych  # noqa: E402

#: (sampler, N) of the unconditional comparison (``--tiny``: TINY_SAMPLERS).
SAMPLERS = [("Heun", 10), ("Heun", 18), ("Heun", 35), ("DDIM", 10), ("DDIM", 50), ("DDIM", 100),
            ("PC", 1000)]
TINY_SAMPLERS = [("Heun", 2), ("DDIM", 2), ("PC", 3)]
TASKS = {"inpaint centre": {"sampling.task": "inpaint", "sampling.mask": "centre_square"},
         "inpaint left half": {"sampling.task": "inpaint", "sampling.mask": "left_half"},
         "super-resolution ×2 (DPS)": {"sampling.task": "dps", "sampling.operator": "pool",
                                       "sampling.pool_factor": 2}}
TINY = {"model.nf": 8, "model.ch_mult": (1, 2), "model.attn_resolutions": (), "data.image_size": 8,
        "training.n_iters": 4, "training.log_freq": 2, "training.eval_freq": 0,
        "training.snapshot_freq": 4, "training.snapshot_sampling": False, "sde.num_scales": 5}


def _sampler_overrides(label: str, steps: int) -> dict:
    if label == "Heun":
        return {"sampling.method": "heun", "sampling.heun_steps": steps}
    if label == "DDIM":
        return {"sampling.method": "ddim", "sampling.ddim_steps": steps, "sampling.eta": 0.0}
    return {"sampling.method": "pc", "sde.num_scales": steps}


def _configured(config, overrides: dict):
    config = config.copy_and_resolve_references()
    for dotted, value in overrides.items():
        section, field = dotted.split(".")
        config[section][field] = value
    return config


def ensure_trained(config, workdir: str, use_latest: bool) -> int:
    """Train the run in ``workdir`` up to ``training.n_iters`` unless a checkpoint of that step
    is there (a partial run resumes), or with ``use_latest`` take its latest checkpoint as it is;
    returns the step of the checkpoint the study samples."""
    directory = checkpoint_dir(workdir)
    latest = 0
    if os.path.isdir(directory):
        with manager(directory, read_only=True) as ckpt:
            latest = ckpt.latest_step() or 0
    if latest >= config.training.n_iters or (use_latest and latest > 0):
        return latest
    if use_latest:
        raise FileNotFoundError(f"--use-latest: {directory} holds no checkpoint.")
    train.train(build_experiment(config), workdir)
    return config.training.n_iters


def unconditional(config, workdir, step, label, steps, num, features, test, key
                  ) -> tuple[dict, np.ndarray]:
    """``num`` samples of one sampler from the checkpoint of ``step``: quality in the classifier's
    feature space, NFE, seconds per sample; and the samples."""
    experiment = build_experiment(_configured(config, _sampler_overrides(label, steps)))
    mesh = parallel.data_mesh()
    params = load_checkpoint(experiment, workdir, step, mesh=mesh).ema_params
    batch = experiment.evaluation.batch_size
    sampler = BatchSampler(experiment, params, batch, mesh)
    parts, walls, nfe = [], [], 0
    for i in range(max(math.ceil(num / batch), 2)):  # batch 0 compiles: not timed
        start = time.perf_counter()
        images, nfe = sampler(jax.random.fold_in(key, i))
        walls.append(time.perf_counter() - start)
        parts.append(images)
    samples = np.concatenate(parts)[:num]
    row = quality(features, test.x, samples, key)
    row.update(nfe=nfe, seconds_per_sample=statistics.median(walls[1:]) / batch,
               load_average=os.getloadavg()[0])
    return row, samples


def save_grid(path: str, images: np.ndarray, columns: int | None = None) -> str:
    """uint8 images [N, H, W, C] as a PNG grid, each pixel repeated k × k (k = ⌈32 / H⌉) so that
    8 × 8 digits can be seen."""
    k = max(1, math.ceil(32 / images.shape[1]))
    images = np.repeat(np.repeat(images, k, axis=1), k, axis=2)
    return plots.save_image_grid(path, images.astype(np.float32) / 255.0, columns)


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image PSNR (dB) of uint8 images against uint8 references, peak 255."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2, axis=(1, 2, 3))
    return 10 * np.log10(255.0**2 / np.maximum(mse, 1e-12))


def complete(config, workdir, step, overrides, x, key
             ) -> tuple[np.ndarray, np.ndarray, int, float]:
    """The task of ``overrides`` on model-space images x with the checkpoint of ``step``: (shown
    inputs, outputs) as uint8, the NFE and the seconds per image (after a first, compiling,
    batch)."""
    experiment = build_experiment(_configured(config, overrides))
    mesh = parallel.data_mesh()
    params = load_checkpoint(experiment, workdir, step, mesh=mesh).ema_params
    program = task_program(experiment, mesh)
    batch = experiment.evaluation.batch_size
    shown, outputs, walls, nfe = [], [], [], 0
    for start in range(0, len(x), batch):
        rows = np.minimum(np.arange(start, start + batch), len(x) - 1)
        begin = time.perf_counter()
        s, out, nfe = program(params, parallel.shard_batch(x[rows], mesh),
                              jax.random.fold_in(key, start))
        out = host_array(out)
        walls.append(time.perf_counter() - begin)
        keep = slice(0, min(batch, len(x) - start))
        shown.append(to_uint8(experiment, host_array(s))[keep])
        outputs.append(to_uint8(experiment, out)[keep])
    per_image = statistics.median(walls[1:] if len(walls) > 1 else walls) / batch
    return np.concatenate(shown), np.concatenate(outputs), int(nfe), per_image


def task_row(features, shown, outputs, truth, labels) -> dict:
    accuracy = lambda images: float(np.mean(np.argmax(features(images)[1], -1) == labels))  # noqa: E731
    return {"psnr": float(psnr(outputs, truth).mean()), "accuracy": accuracy(outputs),
            "input_psnr": float(psnr(shown, truth).mean()), "input_accuracy": accuracy(shown)}


def _f(value, digits=2):
    return "—" if value is None else f"{value:.{digits}f}"


def markdown(results: dict, data_row: dict, args, samplers, commands: list[str],
             pictures: dict) -> str:
    runs = list(results)
    lines = [
        "# Fast samplers and controllable generation on digits", "",
        "The digits models of the offline demonstration (`configs/ve/digits_{u,qc}.py`: NCSN++ on "
        "the VE SDE, U and QC) sampled with Heun on EDM's noise levels, DDIM (η = 0) and the PC "
        "sampler, and completing test digits by inpainting and by diffusion posterior sampling "
        f"(`experiments/sampling_study.py`). FID, precision and recall (k = 3) of "
        f"{args.num_samples} samples against the test split **in the feature space of the "
        f"library's digits classifier** (`sgm_jax.metrics.feature_classifier`, {FEATURE_STEPS} "
        f"steps, seed {FEATURE_SEED}): not Inception FIDs, comparable with each other at equal "
        "sample counts; the \"data\" row is the training split against the test split. Seconds "
        "per sample: the median batch (after the first, which compiles) divided by its size, on "
        "the 2-core CPU with the "
        "1-min load average given (other jobs shared the machine). Checkpoints (EMA): " + ", ".join(
            f"{r} step {results[r]['step']:,}" for r in runs) + ".", "",
        "## Unconditional samples", "",
        "| sampler | N | NFE | " + " | ".join(
            f"{r} FID ↓ | {r} precision ↑ | {r} recall ↑ | {r} s / sample" for r in runs) + " |",
        "|---" * (3 + 4 * len(runs)) + "|",
        "| data | | | " + " | ".join(f"{_f(data_row['fid_clf'])} | {_f(data_row['precision'], 3)} "
                                      f"| {_f(data_row['recall'], 3)} | " for _ in runs) + " |"]
    for label, steps in samplers:
        name = f"{label} {steps}"
        rows = [results[r]["samplers"][name] for r in runs]
        lines.append(f"| {label} | {steps} | {rows[0]['nfe']} | " + " | ".join(
            f"{_f(row['fid_clf'])} | {_f(row['precision'], 3)} | {_f(row['recall'], 3)} | "
            f"{_f(row['seconds_per_sample'], 4)} (load {row['load_average']:.1f})"
            for row in rows) + " |")
    lines += ["", "## Completion of test digits", "",
              f"The first {args.num_tasks} test images; PSNR (dB) against the originals and the "
              "digits classifier's accuracy on the completed images (the label of the original). "
              "\"input\": the same for the inputs (the hole grey; the low-resolution image "
              "repeated 2 × 2). DPS: "
              + (f"ζ chosen by PSNR on the next {args.num_tasks} test images among {args.zetas}"
                 if len(args.zetas) > 1 else f"ζ = {args.zetas[0]}")
              + f", {args.dps_steps} steps, σ_y = {args.dps_noise}.", "",
              "| task | input PSNR | input accuracy | " + " | ".join(
                  f"{r} PSNR ↑ | {r} accuracy ↑ | {r} NFE | {r} s / image" for r in runs) + " |",
              "|---" * (3 + 4 * len(runs)) + "|"]
    for task in TASKS:
        rows = [results[r]["tasks"][task] for r in runs]
        zeta = [f" ζ = {row['zeta']}" if "zeta" in row else "" for row in rows]
        lines.append(f"| {task} | {_f(rows[0]['input_psnr'])} | {_f(rows[0]['input_accuracy'], 3)} | "
                     + " | ".join(f"{_f(row['psnr'])} | {_f(row['accuracy'], 3)}{z} | "
                                  f"{row['nfe']} | {_f(row['seconds_per_image'], 4)}"
                                  for row, z in zip(rows, zeta)) + " |")
    lines += [f"| originals | | {_f(data_row['test_accuracy'], 3)} | " +
              " | ".join("| | |" for _ in runs) + " |", ""]
    lines += [f"{name}: ![{name}]({path})" for name, path in pictures.items()]
    lines += ["", "Command" + ("s:" if len(commands) > 1 else ":"), "", "```bash", *commands, "```",
              ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", action="append", required=True, metavar="NAME=CONFIG[:OVERRIDES]")
    parser.add_argument("--workdir", default="runs/digits")
    parser.add_argument("--out", default="docs/results/sampling.md")
    parser.add_argument("--num-samples", type=int, default=512)
    parser.add_argument("--batch", type=int, default=128, help="eval.batch_size of every program")
    parser.add_argument("--num-tasks", type=int, default=128)
    parser.add_argument("--dps-steps", type=int, default=250)
    parser.add_argument("--dps-noise", type=float, default=0.01)
    parser.add_argument("--zetas", type=float, nargs="+", default=[0.3, 1.0, 3.0])
    parser.add_argument("--use-latest", action="store_true",
                        help="sample each run's latest checkpoint instead of training it to "
                             "training.n_iters")
    parser.add_argument("--add", action="store_true",
                        help="keep the runs of OUT's JSON (same settings) not given here")
    parser.add_argument("--tiny", action="store_true", help="toy sizes, to test the script")
    args = parser.parse_args(argv)
    samplers = TINY_SAMPLERS if args.tiny else SAMPLERS
    runs = dict(item.split("=", 1) for item in args.run)
    out_dir = os.path.dirname(os.path.abspath(args.out))
    stem = os.path.splitext(os.path.basename(args.out))[0]
    key = jax.random.PRNGKey(FEATURE_SEED)
    json_path = os.path.splitext(args.out)[0] + ".json"
    settings = json.loads(json.dumps({k: v for k, v in vars(args).items()
                                      if k not in ("run", "add", "use_latest")}))
    results, pictures, data_row, commands = {}, {}, None, []
    if args.add and os.path.exists(json_path):
        with open(json_path) as f:
            earlier = json.load(f)
        if earlier["settings"] != settings:
            differ = sorted(k for k in settings if earlier["settings"].get(k) != settings[k])
            raise ValueError(f"--add: {json_path} was made with other settings ({differ}); "
                             f"run again without --add.")
        results = {r: row for r, row in earlier["runs"].items() if r not in runs}
        pictures = {k: v for k, v in earlier["pictures"].items() if k.split(",")[0] in results}
        commands = earlier["commands"]
    for name, spec in runs.items():
        config = load_config(spec)
        if args.tiny:
            config = _configured(config, TINY)
        config = _configured(config, {"eval.batch_size": min(args.batch, args.num_samples),
                                      "sampling.dps_steps": args.dps_steps,
                                      "sampling.noise_std": args.dps_noise})
        workdir = os.path.join(args.workdir, name)
        step = ensure_trained(config, workdir, args.use_latest)
        size = config.data.image_size
        if data_row is None:
            train_split = load_split("digits", "train", image_size=size)
            test = load_split("digits", "test", image_size=size)
            features = fit_feature_space(train_split.x, train_split.labels, 10)
            data_row = quality(features, test.x, train_split.x, key)
            data_row["test_accuracy"] = float(np.mean(np.argmax(features(test.x)[1], -1)
                                                      == test.labels))
        results[name] = {"step": step, "samplers": {}, "tasks": {}}
        for label, steps in samplers:
            row, samples = unconditional(config, workdir, step, label, steps, args.num_samples,
                                         features, test, key)
            results[name]["samplers"][f"{label} {steps}"] = row
            print(name, label, steps, {k: row[k] for k in ("fid_clf", "precision", "recall",
                                                           "nfe", "seconds_per_sample")})
            if (label, steps) in (("Heun", 18), ("DDIM", 10), ("PC", 1000)) or args.tiny:
                path = os.path.join(out_dir, f"{stem}_{name}_{label.lower()}{steps}.png")
                pictures[f"{name}, {label} N = {steps}"] = os.path.basename(
                    save_grid(path, samples[:64]))
        n = args.num_tasks
        x = get_data_scaler(config.data.centered)(test.x[:2 * n].astype(np.float32) / 255.0)
        truth, labels = test.x[:n], test.labels[:n]
        for task, overrides in TASKS.items():
            if overrides["sampling.task"] == "dps" and len(args.zetas) > 1:
                scores = {}
                for zeta in args.zetas:
                    _, held, _, _ = complete(config, workdir, step,
                                             {**overrides, "sampling.zeta": zeta}, x[n:], key)
                    scores[zeta] = float(psnr(held, test.x[n:2 * n]).mean())
                zeta = max(scores, key=scores.get)
                overrides = {**overrides, "sampling.zeta": zeta}
            elif overrides["sampling.task"] == "dps":
                overrides, scores = {**overrides, "sampling.zeta": args.zetas[0]}, {}
            shown, outputs, nfe, seconds = complete(config, workdir, step, overrides, x[:n], key)
            row = task_row(features, shown, outputs, truth, labels)
            row.update(nfe=nfe, seconds_per_image=seconds, load_average=os.getloadavg()[0])
            if overrides["sampling.task"] == "dps":
                row.update(zeta=overrides["sampling.zeta"], zeta_psnr=scores)
            results[name]["tasks"][task] = row
            print(name, task, row)
            images, columns = triptych(shown[:16], outputs[:16], truth[:16])
            slug = task.split(" (")[0].replace(" ", "_").replace("×", "x")
            path = os.path.join(out_dir, f"{stem}_{name}_{slug}.png")
            pictures[f"{name}, {task} (input, output, truth)"] = os.path.basename(
                save_grid(path, images, columns))
    commands.append(command_line("experiments/sampling_study.py", argv))
    write_keeping_discussion(args.out, markdown(results, data_row, args, samplers, commands,
                                                pictures))
    with open(json_path, "w") as f:
        json.dump({"data": data_row, "runs": results, "settings": settings,
                   "pictures": pictures, "commands": commands}, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
