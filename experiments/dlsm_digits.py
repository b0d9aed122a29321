"""DLSM on the offline digits: base, scaling and DLSM guidance of one digits score model,
through ``main.py``'s code path (``configs/dlsm/digits_{base,scaling,dlsm}.py``).

    python experiments/dlsm_digits.py --score runs/digits --workdir runs/dlsm_digits \\
        --out docs/results/dlsm_digits.md

``--score`` is a trained digits U run (``python main.py --config=configs/ve/digits_u.py
--mode=train --workdir=runs/digits``). The script runs, in this process, what these commands
run:

    python main.py --config=configs/dlsm/digits_dlsm.py --mode=train --workdir=W/dlsm \\
        --config.classifier.score_workdir=S
    python main.py --config=configs/dlsm/digits_base.py --mode=train --workdir=W/base \\
        --config.classifier.score_workdir=S
    python main.py --config=configs/dlsm/digits_scaling.py --mode=eval --workdir=W/base \\
        --config.classifier.score_workdir=S

where each ``--mode=train`` is followed by ``--mode=eval`` with the same config and workdir (the
conditional evaluation: class-wise samples, FID / IS / KID / PRDC and class-wise PRDC in the
digits feature space, CAS), and each evaluation by ``--mode=sample``, which returns its samples
with their classes. It adds one
number the evaluation does not compute: the share of the samples of class y that the judge of
``experiments/digits_measure.py`` labels y ("judge agrees"). It writes the table to ``--out``
(keeping its "## Distance from the paper" section), the numbers to ``dlsm_digits.json`` and a
per-class sample grid per method beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "experiments")]

import main as entry  # noqa: E402
from digits_demo import load_config  # noqa: E402
from digits_measure import fit_judge  # noqa: E402
from report import command_line, write_keeping_discussion  # noqa: E402

#: method -> (config, workdir name, mode): scaling evaluates the CE classifier of base.
RUNS = {"base": ("configs/dlsm/digits_base.py", "base", "train"),
        "scaling": ("configs/dlsm/digits_scaling.py", "base", "eval"),
        "dlsm": ("configs/dlsm/digits_dlsm.py", "dlsm", "train")}
ORDER = ("dlsm", "base", "scaling")
COLUMNS = (("cas", "CAS ↑"), ("judge_agrees", "judge agrees ↑"), ("precision", "precision ↑"),
           ("recall", "recall ↑"), ("density", "density ↑"), ("coverage", "coverage ↑"),
           ("cw_precision", "CW precision ↑"), ("cw_recall", "CW recall ↑"),
           ("cw_density", "CW density ↑"), ("cw_coverage", "CW coverage ↑"),
           ("fid", "FID (features) ↓"), ("is", "IS (features) ↑"))


def markdown(rows: dict[str, dict], command: str, grids: dict[str, str]) -> str:
    header = "| method | " + " | ".join(h for _, h in COLUMNS) + " |"
    lines = ["# DLSM on the offline digits (10 classes, 2 CPU cores)", "",
             "Base, scaling (α = 10) and DLSM guidance of the digits score model of "
             "`docs/results/digits.md`, through `main.py`'s code path "
             "(`experiments/dlsm_digits.py`). Metrics in the library's digits feature space "
             "against the 359 test images (not Inception figures); \"judge agrees\": the share "
             "of the samples of class y that the judge of `experiments/digits_measure.py` "
             "labels y. Numbers: `dlsm_digits.json`.", "",
             "```bash", command, "```", "", header, "|" + "---|" * (len(COLUMNS) + 1)]
    for name in ORDER:
        row = rows[name]
        label = "scaling (α = 10)" if name == "scaling" else ("DLSM" if name == "dlsm" else name)
        lines.append(f"| {label} | " + " | ".join(
            "—" if row.get(k) is None else f"{row[k]:.3f}" if k not in ("fid", "is")
            else f"{row[k]:.2f}" for k, _ in COLUMNS) + " |")
    lines += ["", "Samples, one row per class:", ""]
    lines += [f"{name}: ![{name}]({path})" for name, path in grids.items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--score", required=True, help="a trained digits U run")
    parser.add_argument("--workdir", default="runs/dlsm_digits")
    parser.add_argument("--out", default="docs/results/dlsm_digits.md")
    args = parser.parse_args(argv)
    score = os.path.abspath(args.score)
    judge = fit_judge()
    rows, grids = {}, {}
    out_dir = os.path.dirname(os.path.abspath(args.out))
    for name in ("dlsm", "base", "scaling"):
        config_file, folder, mode = RUNS[name]
        workdir = os.path.join(args.workdir, folder)
        config = load_config(f"{config_file}:classifier.score_workdir={score}")
        if mode == "train":
            entry.run(config, "train", workdir)
        results = entry.run(config, "eval", workdir)
        with np.load(entry.run(config, "sample", workdir)) as stored:
            images, labels = stored["images"], stored["label"]
        predicted = np.argmax(judge.features(images)[1], -1)
        results["judge_agrees"] = float(np.mean(predicted == labels))
        results["judge_agrees_per_class"] = [float(np.mean(predicted[labels == c] == c))
                                             for c in range(10)]
        rows[name] = results
        grid = f"dlsm_digits_{name}.png"
        shutil.copyfile(results["figures"][0], os.path.join(out_dir, grid))
        grids[name] = grid
        print(f"{name}: CAS {results.get('cas')}, judge agrees {results['judge_agrees']:.3f}",
              flush=True)
    command = command_line("experiments/dlsm_digits.py", argv)
    write_keeping_discussion(args.out, markdown(rows, command, grids))
    with open(os.path.join(out_dir, "dlsm_digits.json"), "w") as f:
        json.dump({k: {**v, "figures": None} for k, v in rows.items()}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
