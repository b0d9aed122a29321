"""The image pipeline end to end on 2 CPU cores: NCSN++ on scikit-learn's digits (8×8 grey),
trained and evaluated through ``main.py``'s code path, as U, QC and the two cheaper QC schedules.

For every run ``NAME=CONFIG`` (a config file, optionally followed by ``:FIELD=VALUE,...``
overrides) the script calls ``main.run(config, "train", WORKDIR/NAME)`` (which resumes from the
run's latest checkpoint) and ``main.run(config, "eval", WORKDIR/NAME)`` (samples and their NFE,
bits/dim on the test split, Asym / NAsym over t), then computes sample-quality metrics in the feature space of a small
digits classifier trained by the library (``sgm_jax.metrics.feature_classifier``, fixed key):
FID, KID and precision / recall / density / coverage (k = 3) of the evaluation's samples against
the test split. **These are not Inception FIDs**: they compare the runs of this table with each
other, and with the same numbers for the training split against the test split ("data" row),
which bounds what a perfect model can reach with this many samples.

    python experiments/digits_demo.py --workdir runs/digits \\
        --run u=configs/ve/digits_u.py --run qc=configs/ve/digits_qc.py \\
        --run qc_fraction_0.25=configs/ve/digits_qc.py:training.qc_fraction=0.25 \\
        --run qc_every_4=configs/ve/digits_qc.py:training.qc_every=4 \\
        --out docs/results/digits.md

Writes the table to ``--out`` (keeping a "## Distance from the paper" section), the Asym-over-t
figure and a sample grid per run beside it.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import runpy
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402

import main as entry  # noqa: E402
from report import command_line, write_keeping_discussion  # noqa: E402
from sgm_jax import plots  # noqa: E402
from sgm_jax.data.images import load_split  # noqa: E402
from sgm_jax.metrics import fid, kid, prdc  # noqa: E402
from sgm_jax.metrics.feature_classifier import (  # noqa: E402
    FEATURE_SEED, FEATURE_STEPS, fit_feature_space)
from sgm_jax.evaluate.toy import training_curves  # noqa: E402

PRDC_K = 3
KID_SUBSET = 100
KID_SUBSETS = 100


def _split_overrides(overrides: str) -> list[str]:
    """``FIELD=VALUE,FIELD=VALUE`` split at the commas outside brackets (a value may be a JSON
    list such as ``[1, 2]``)."""
    items, depth, current = [], 0, ""
    for char in overrides:
        depth += (char in "[(") - (char in "])")
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    return [item for item in items + [current] if item]


def load_config(spec: str):
    """``CONFIG[:FIELD=VALUE,...]`` -> the config of the file with the overrides applied (values
    parsed as JSON when they are, strings otherwise; a JSON list becomes a tuple where the field
    holds a tuple)."""
    path, _, overrides = spec.partition(":")
    config = runpy.run_path(os.path.join(ROOT, path) if not os.path.isabs(path) else path)[
        "get_config"]()
    for item in _split_overrides(overrides):
        field, _, value = item.partition("=")
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
        target = config
        *parents, leaf = field.split(".")
        for name in parents:
            target = target[name]
        if leaf not in target:
            raise ValueError(f"unknown config field {field!r} in --run {spec!r}.")
        if isinstance(value, list) and isinstance(target[leaf], tuple):
            value = tuple(value)
        target[leaf] = value
    return config


def stored_samples(workdir: str, step: int) -> np.ndarray:
    """The evaluation's samples (uint8) from its resumable units, in batch order."""
    files = sorted(glob.glob(os.path.join(workdir, "eval", f"ckpt_{step}", "samples-*",
                                          "samples_*.npz")))
    if not files:
        raise FileNotFoundError(f"no evaluation samples in {workdir}/eval/ckpt_{step}.")
    return np.concatenate([np.load(f)["images"] for f in files])


def quality(features, real: np.ndarray, fake: np.ndarray, key) -> dict:
    """Classifier-feature FID, KID and PRDC of ``fake`` against ``real`` (uint8 images)."""
    real_f, fake_f = features(real)[0], features(fake)[0]
    n = min(len(real_f), len(fake_f))
    kid_mean, kid_std = kid(real_f, fake_f, subset_size=min(KID_SUBSET, n),
                            num_subsets=KID_SUBSETS, key=key)
    out = {"fid_clf": fid(real_f, fake_f), "kid_clf": kid_mean, "kid_clf_std": kid_std}
    out.update({k: float(v) for k, v in prdc(real_f[:n], fake_f[:n], PRDC_K).items()})
    return out


COLUMNS = (("fid_clf", "FID (clf) ↓", 2), ("kid_clf", "KID (clf) ↓", 4),
           ("precision", "Precision ↑", 3), ("recall", "Recall ↑", 3),
           ("density", "Density ↑", 3), ("coverage", "Coverage ↑", 3),
           ("bpd", "bits/dim ↓", 3), ("asym", "Asym ↓", None), ("nasym", "NAsym ↓", None),
           ("nfe", "NFE", 0), ("steps_per_sec", "train steps/s", 2))


def plot_asym_over_t(path: str, curves: dict[str, tuple[list, list]]) -> str:
    """Every run's mean Asym per noise level, on one log-scale panel."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, (t, values) in curves.items():
        ax.semilogy(t, values, marker=".", lw=1, label=name)
    ax.set_xlabel("t")
    ax.set_ylabel("Asym (mean over test images)")
    ax.legend()
    return plots.save_figure(fig, path)


def _cell(value, decimals) -> str:
    if value is None:
        return "—"
    return f"{value:.3e}" if decimals is None else f"{value:.{decimals}f}"


def markdown(rows: dict[str, dict], command: str, figure: str, grids: dict[str, str],
             num_samples: int, num_test: int, config) -> str:
    """The results file: the table of every run, the Asym figure, the sample grids and the
    command; the sampler and image size named are those of ``config`` (the first run's)."""
    size, sampling = config.data.image_size, config.sampling
    header = "| run | " + " | ".join(h for _, h, _ in COLUMNS) + " |"
    lines = [
        "# Digits: the image pipeline on 2 CPU cores", "",
        f"NCSN++ (VE SDE) on scikit-learn's digits, {size}×{size} grey, trained and evaluated "
        "through `main.py`'s code path (`experiments/digits_demo.py`). FID, KID and PRDC (k = 3) are "
        f"computed on {num_samples} samples against the {num_test} test images **in the feature "
        "space of a small digits classifier trained by the library** "
        "(`sgm_jax.metrics.feature_classifier`, "
        f"{FEATURE_STEPS} steps, seed {FEATURE_SEED}): they are not Inception FIDs and "
        "compare these runs with each other only. The \"data\" row is the training split against "
        "the test split: the value a perfect model would get with this many samples. bits/dim on "
        "the first 128 test images (one pass, uniform dequantisation, Hutchinson divergence), "
        "Asym / NAsym (QCSGM Eqs. A10–A11) averaged over the evaluation's "
        f"{config.eval.asym_num_levels} noise levels, NFE of the PC sampler (reverse diffusion + "
        f"Langevin, snr {sampling.snr:g}, N = {config.sde.num_scales}) per sample; training steps "
        "per second on the 2-core CPU (median over the logged windows, one device).", "",
        header, "|" + "---|" * (len(COLUMNS) + 1)]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(_cell(row.get(k), d) for k, _, d in COLUMNS)
                     + " |")
    lines += ["", f"Asym over t: ![asym]({figure})", ""]
    lines += [f"{name}: ![{name}]({path})" for name, path in grids.items()]
    lines += ["", "Command:", "", "```bash", command, "```", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", action="append", required=True, metavar="NAME=CONFIG[:OVERRIDES]")
    parser.add_argument("--workdir", default="runs/digits")
    parser.add_argument("--out", default="docs/results/digits.md")
    args = parser.parse_args(argv)
    runs = dict(item.split("=", 1) for item in args.run)

    image_size = load_config(next(iter(runs.values()))).data.image_size
    train_split = load_split("digits", "train", image_size=image_size)
    test_split = load_split("digits", "test", image_size=image_size)
    key = jax.random.PRNGKey(FEATURE_SEED)
    features = fit_feature_space(train_split.x, train_split.labels, 10)
    accuracy = float(np.mean(np.argmax(features(test_split.x)[1], -1) == test_split.labels))
    print(f"feature classifier: test accuracy {accuracy:.4f}")

    rows = {"data": quality(features, test_split.x, train_split.x, key)}
    curves, grids, num_samples = {}, {}, 0
    out_dir = os.path.dirname(os.path.abspath(args.out))
    for name, spec in runs.items():
        workdir = os.path.join(args.workdir, name)
        entry.run(load_config(spec), "train", workdir)
        results = entry.run(load_config(spec), "eval", workdir)
        samples = stored_samples(workdir, results["step"])
        num_samples = len(samples)
        row = quality(features, test_split.x, samples, key)
        row.update({k: results.get(k) for k in ("bpd", "asym", "nasym", "nfe")})
        row["steps_per_sec"] = float(np.median(training_curves(workdir)["steps_per_sec"][1]))
        rows[name] = row
        over_t = results["asym_over_t"]
        curves[name] = (over_t["t"], over_t["asym_mean"])
        grids[name] = os.path.basename(plots.save_image_grid(
            os.path.join(out_dir, f"digits_{name}_samples.png"),
            samples[:64].astype(np.float32) / 255.0))
    figure = os.path.basename(plot_asym_over_t(os.path.join(out_dir, "digits_asym_over_t.png"),
                                               curves))
    rows["data"]["classifier_accuracy"] = accuracy
    command = command_line("experiments/digits_demo.py", argv)
    write_keeping_discussion(args.out, markdown(rows, command, figure, grids, num_samples,
                                                len(test_split.x),
                                                load_config(next(iter(runs.values())))))
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(rows, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
