"""Does the offline image demonstration draw digits? Trains the digits recipe as a user runs it,
draws 1,000 samples and judges them with a classifier trained on the real digits.

    python experiments/digits_measure.py --workdir runs/digits --train --out docs/results/digits.md

With ``--train`` the script runs, as subprocesses in the repository root,

    python main.py --config=configs/ve/digits_u.py --mode=train --workdir=WORKDIR
    python main.py --config=configs/ve/digits_u.py --mode=sample --workdir=WORKDIR \\
        --config.sampling.num_samples=1000

and times each (wall clock, with the machine's load average before and after); without it, it
only samples (when ``WORKDIR`` has no samples of its latest checkpoint yet) and measures,
keeping the timings an earlier ``--train`` stored in ``WORKDIR/measure.json``.

**The judge** is the library's digits classifier (:mod:`sgm_jax.metrics.feature_classifier`:
seed 0, 2,000 steps, input noise 0.2) trained on the training split (1,438 images); its accuracy
on the held-out test split (359) is stated with the results. **The criteria** for the samples:

* confident: at least 90 % of them get a top-class probability ≥ 0.9;
* classes: every class appears among the predicted labels, and none takes more than twice its
  share (at most 2·N/10 of the N samples);
* FID in the classifier's 64-d feature space (its penultimate layer) against the test split,
  within 3× the data's own value: the FID of 1,000 training images (drawn without replacement
  with seed 0) against the same test split, so that both sets have the same size and the same
  reference.

The same numbers are reported for the data: the 1,000 training images (which the classifier was
trained on) and the 359 test images (which it was not).
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from typing import Callable

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from report import write_section  # noqa: E402
from sgm_jax import plots  # noqa: E402
from sgm_jax.data.images import load_split  # noqa: E402
from sgm_jax.metrics import fid  # noqa: E402
from sgm_jax.metrics.feature_classifier import (  # noqa: E402
    FEATURE_INPUT_NOISE, FEATURE_SEED, FEATURE_STEPS, fit_feature_space)

CONFIG = "configs/ve/digits_u.py"
IMAGE_SIZE = 8
NUM_CLASSES = 10
NUM_SAMPLES = 1000
#: A sample is "recognised" when the judge's top-class probability is at least this.
CONFIDENCE = 0.9
#: The fraction of samples that must be recognised.
MIN_CONFIDENT = 0.9
#: No class may take more than this many times its share 1/NUM_CLASSES.
MAX_SHARE_FACTOR = 2.0
#: The samples' FID may be at most this many times the data's.
MAX_FID_RATIO = 3.0
#: The judge must reach this accuracy on the held-out test split.
MIN_ACCURACY = 0.97
#: The train command's budget on the 2-core machine, in seconds.
TIME_BUDGET_S = 15 * 60
SECTION = "## The recipe and its measure"
#: The picture of the results file: the first 100 samples, each pixel drawn as a square of
#: this side, beside the results file.
PICTURE, PICTURE_SCALE = "digits_samples.png", 4


@dataclasses.dataclass(frozen=True)
class Judge:
    """The classifier trained on the training split: ``features(uint8 images) -> (features,
    logits)``, its held-out ``accuracy``, the test split (the FID reference) and the data's own
    rows (``data``: name -> measure of :func:`measure_images`)."""

    features: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    accuracy: float
    test_x: np.ndarray
    test_features: np.ndarray
    data_fid: float
    data: dict


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def _label_statistics(logits: np.ndarray) -> dict:
    probs = _softmax(logits)
    counts = np.bincount(np.argmax(probs, -1), minlength=NUM_CLASSES)
    n = len(probs)
    return {
        "n": int(n),
        "confident": float(np.mean(probs.max(-1) >= CONFIDENCE)),
        "class_counts": counts.tolist(),
        "min_class_count": int(counts.min()),
        "max_share": float(counts.max() / n),
        "max_share_over_fair": float(counts.max() / n * NUM_CLASSES),
    }


def fit_judge(seed: int = FEATURE_SEED) -> Judge:
    """Trains the judge on the training split and measures the data with it (module
    docstring)."""
    train = load_split("digits", "train", image_size=IMAGE_SIZE)
    test = load_split("digits", "test", image_size=IMAGE_SIZE)
    features = fit_feature_space(train.x, train.labels, NUM_CLASSES, seed=seed)
    test_features, test_logits = features(test.x)
    accuracy = float(np.mean(np.argmax(test_logits, -1) == test.labels))
    rows = np.random.default_rng(seed).choice(len(train.x), NUM_SAMPLES, replace=False)
    train_features, train_logits = features(train.x[rows])
    data_fid = float(fid(train_features, test_features))
    data = {
        f"data: {NUM_SAMPLES} training images": {
            **_label_statistics(train_logits), "fid": data_fid, "fid_ratio": 1.0,
            **_pixels(train.x[rows])},
        f"data: {len(test.x)} test images (held out)": {
            **_label_statistics(test_logits), "fid": None, "fid_ratio": None,
            **_pixels(test.x)},
    }
    return Judge(features, accuracy, test.x, test_features, data_fid, data)


def _pixels(images: np.ndarray) -> dict:
    x = images.astype(np.float64) / 255.0
    return {"pixel_mean": float(x.mean()), "pixel_std": float(x.std())}


def measure_images(judge: Judge, images: np.ndarray) -> dict:
    """The measure of uint8 ``images`` [N, 8, 8, 1]: the judge's label statistics, the FID
    against the test split and its ratio to the data's, the pixels' mean and standard deviation
    (in [0, 1]), and the verdict (``passed``, ``failures``)."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 1):
        raise ValueError(f"images must be uint8 [N, {IMAGE_SIZE}, {IMAGE_SIZE}, 1]; got dtype "
                         f"{images.dtype} and shape {images.shape}.")
    feats, logits = judge.features(images)
    value = float(fid(feats, judge.test_features))
    result = {**_label_statistics(logits), "fid": value, "fid_ratio": value / judge.data_fid,
              **_pixels(images)}
    result["failures"] = failures(result)
    result["passed"] = not result["failures"]
    return result


def failures(result: dict) -> list[str]:
    """The criteria (module docstring) that ``result`` misses, in words; empty when it passes."""
    out = []
    if result["n"] < NUM_SAMPLES:
        out.append(f"{result['n']} samples, fewer than {NUM_SAMPLES}")
    if result["confident"] < MIN_CONFIDENT:
        out.append(f"{result['confident']:.1%} recognised with p >= {CONFIDENCE}, "
                   f"fewer than {MIN_CONFIDENT:.0%}")
    if result["min_class_count"] == 0:
        out.append("a class never appears")
    if result["max_share_over_fair"] > MAX_SHARE_FACTOR:
        out.append(f"a class takes {result['max_share']:.1%} of the samples, more than "
                   f"{MAX_SHARE_FACTOR:g}x its share")
    if result["fid_ratio"] > MAX_FID_RATIO:
        out.append(f"FID {result['fid']:.2f} is {result['fid_ratio']:.2f}x the data's, more than "
                   f"{MAX_FID_RATIO:g}x")
    return out


def latest_samples(workdir: str) -> str | None:
    """The ``--mode=sample`` file of the latest checkpoint of ``workdir``, or None."""
    steps = [int(os.path.basename(p)) for p in glob.glob(os.path.join(workdir, "checkpoints", "*"))
             if os.path.basename(p).isdigit()]
    if not steps:
        return None
    path = os.path.join(workdir, "samples", f"samples_step_{max(steps)}.npz")
    return path if os.path.exists(path) else None


def timed(command: list[str]) -> dict:
    """Runs ``command`` in the repository root, its output passed through; returns its wall
    time, its CPU time (user + system, all threads) and the 1-minute load average before and
    after. A failed command raises.

    On an idle machine a computing process's wall time is at most its CPU time (two cores:
    about half of it when both are busy); on a shared machine the wall time grows with the
    load and the CPU time much less, so both are reported."""
    load_before = os.getloadavg()[0]
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - used.ru_utime) + (after.ru_stime - used.ru_stime)
    return {"command": shlex.join(["python", *command[1:]]), "wall_s": wall, "cpu_s": cpu,
            "load_before": load_before, "load_after": os.getloadavg()[0]}


def main_commands(workdir: str, config: str = CONFIG, overrides: tuple[str, ...] = ()
                  ) -> tuple[list[str], list[str]]:
    """The train and sample commands of ``main.py`` (module docstring) for ``workdir`` (a path
    relative to the repository root, or absolute)."""
    common = [f"--config={config}", f"--workdir={workdir}"]
    return ([sys.executable, "main.py", *common[:1], "--mode=train", *common[1:], *overrides],
            [sys.executable, "main.py", *common[:1], "--mode=sample", *common[1:],
             f"--config.sampling.num_samples={NUM_SAMPLES}", *overrides])


def _cell(value, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def markdown(results: dict) -> str:
    """The section of the results file: the commands (with the README's workdir), their times,
    the judge and the table."""
    lines = [SECTION, ""]
    timings = results.get("timings", {})
    if timings:
        lines += ["```bash"] + [shlex.join(["python", *command[1:]])
                                for command in main_commands("runs/digits")] + ["```", ""]
        for name, t in timings.items():
            lines.append(f"- `--mode={name}`: {t['wall_s'] / 60:.1f} min wall clock, "
                         f"{t['cpu_s'] / 60:.1f} min of CPU time (1-minute load average "
                         f"{t['load_before']:.2f} before, {t['load_after']:.2f} after).")
        lines.append("")
    lines += [
        f"Judge: the library's digits classifier (`sgm_jax.metrics.feature_classifier`, seed "
        f"{FEATURE_SEED}, {FEATURE_STEPS} steps, input noise {FEATURE_INPUT_NOISE}) trained on "
        f"the training split, held-out accuracy **{results['accuracy']:.1%}** on the test split. "
        f"Criteria: ≥ {MIN_CONFIDENT:.0%} of {NUM_SAMPLES} samples labelled with probability ≥ "
        f"{CONFIDENCE}; every class present, none above {MAX_SHARE_FACTOR:g}× its share "
        f"({MAX_SHARE_FACTOR / NUM_CLASSES:.0%}); FID in the classifier's feature space against "
        f"the test split ≤ {MAX_FID_RATIO:g}× the data's (1,000 training images against the "
        "same test split).", "",
        "| images | n | p ≥ 0.9 | smallest class | largest class | FID (clf) | × data | "
        "pixel mean | pixel std | passes |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in results["rows"].items():
        passes = "—" if "passed" not in row else ("yes" if row["passed"] else "no")
        lines.append(
            f"| {name} | {row['n']} | {row['confident']:.1%} | {row['min_class_count']} | "
            f"{row['max_share']:.1%} | {_cell(row['fid'], '.2f')} | "
            f"{_cell(row['fid_ratio'], '.2f')} | {row['pixel_mean']:.3f} | "
            f"{row['pixel_std']:.3f} | {passes} |")
    lines += ["", f"Class counts of the samples (0–9): "
              f"{results['rows']['samples']['class_counts']}.", "",
              f"The first 100 samples: ![digits samples]({PICTURE})", ""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default="runs/digits")
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--train", action="store_true",
                        help="run (and time) the train command first")
    parser.add_argument("--override", action="append", default=[], metavar="--config.A.B=V",
                        help="a config override passed to both commands")
    parser.add_argument("--out", default="", help="a results markdown file to write the section "
                                                  "to (and a .json and the picture beside it)")
    args = parser.parse_args(argv)
    workdir = os.path.abspath(args.workdir)
    shown = os.path.relpath(workdir, ROOT)
    train_cmd, sample_cmd = main_commands(shown if not shown.startswith("..") else workdir,
                                          args.config, tuple(args.override))
    timings, stored = {}, os.path.join(workdir, "measure.json")
    if args.train:
        timings["train"] = timed(train_cmd)
    elif os.path.exists(stored):
        with open(stored) as f:
            timings = json.load(f)["timings"]
    path = latest_samples(workdir)
    if args.train or path is None:
        timings["sample"] = timed(sample_cmd)
        path = latest_samples(workdir)
    samples = np.load(path)["images"]
    judge = fit_judge()
    results = {"accuracy": judge.accuracy, "samples_file": os.path.relpath(path, ROOT),
               "timings": timings,
               "rows": {"samples": measure_images(judge, samples), **judge.data}}
    print(markdown(results))
    with open(stored, "w") as f:
        json.dump(results, f, indent=2)
    if args.out:
        big = np.repeat(np.repeat(samples[:100], PICTURE_SCALE, 1), PICTURE_SCALE, 2)
        plots.save_image_grid(os.path.join(os.path.dirname(args.out), PICTURE),
                              big.astype(np.float32) / 255.0)
        write_section(args.out, SECTION, markdown(results))
        with open(os.path.join(os.path.dirname(args.out), "digits_measure.json"), "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
