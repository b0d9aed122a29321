"""Regenerate the image result tables of the QCSGM and LCSS papers from evaluation outputs.

QCSGM (Chao et al., ICML 2023): Table 3 (ODE sampler: NFE, FID, IS, precision, recall on
CIFAR-10, ImageNet-32x32, CIFAR-100, SVHN), Table 4 (PC sampler at NFE 500 / 1000 / 2000:
FID, IS, precision, recall on CIFAR-10 and ImageNet-32x32), Table 5 (NLL in bits/dim, Asym,
NAsym on the four data sets). LCSS (Osada et al., NeurIPS 2024): Table 3 (CIFAR-10 FID, IS,
bits/dim of DSM and LCSS on NCSN++, NCSN++ deep, DDPM++, DDPM++ deep).

A run is a workdir that ``main.py --mode=eval`` (or ``--mode=train``, which ends with an
evaluation) has evaluated; the script reads its ``eval/ckpt_<step>.json``, the largest step unless
one is given, and places it in the tables its name belongs to. Each cell is ``ours / paper``;
``—`` stands for a run that was not given or a metric its evaluation did not compute (FID, IS,
precision and recall need ``eval.enable_fid``). Runs are named ``NAME=WORKDIR[@STEP]``, by
repeated ``--run`` or in a JSON file given to ``--runs`` (an object mapping each NAME to
``"WORKDIR[@STEP]"``; relative workdirs are taken from the current directory, as with ``--run``):

==================================  ===============================================  ============
NAME                                tables                                           sampler
==================================  ===============================================  ============
``qcsgm:DATASET:VARIANT``           QCSGM Table 3 (sample metrics), Table 5          ``ode``
``qcsgm:DATASET:VARIANT:pcNFE``     QCSGM Table 4, the row of the paper's NFE        ``pc``
``lcss:MODEL:OBJECTIVE``            LCSS Table 3                                     any
==================================  ===============================================  ============

DATASET ∈ {cifar10, imagenet32, cifar100, svhn} (Table 4: cifar10, imagenet32), VARIANT ∈
{c, u, qc} (Table 4: u, qc), NFE ∈ {500, 1000, 2000}, MODEL ∈ {ncsnpp, ncsnpp_deep, ddpmpp,
ddpmpp_deep}, OBJECTIVE ∈ {dsm, lcss}. The configs are ``configs/ve/DATASET_VARIANT.py``
(QCSGM; the ODE sampler with ``--config.sampling.method=ode``),
``configs/ve/cifar10_MODEL_OBJECTIVE.py`` (NCSN++) and
``configs/subvp/cifar10_MODEL_OBJECTIVE.py`` (DDPM++). A run whose evaluation drew
samples with another sampler than its table's is refused. An evaluation keeps its results and
cached samples under ``WORKDIR/eval`` whatever the sampler, so evaluate a model with the second
sampler in a workdir of its own (a copy of ``WORKDIR/checkpoints``). The PC table's NFE is the
paper's row label; the cell beside it gives the NFE the evaluation counted (score_sde's
N·(n_steps + 1)). The evaluation's Asym, tr(JJᵀ) − tr(JJ) = ½‖J − Jᵀ‖²_F, and NAsym are the
quantities of the official code behind Table 5, averaged over ``eval.asym_num_levels`` noise
levels (the paper's 100).

    python experiments/paper_tables.py --run qcsgm:cifar10:u=runs/cifar10_u_ode \\
        --run qcsgm:cifar10:qc=runs/cifar10_qc_ode \\
        --run qcsgm:cifar10:qc:pc1000=runs/cifar10_qc_pc@750000 \\
        --run lcss:ncsnpp_deep:lcss=runs/lcss_ncsnpp_deep \\
        --out docs/results/paper_tables.md

A "## Distance from the paper" section already in ``--out`` is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
from typing import Any

from report import write_keeping_discussion

MISSING = "—"
DATASETS = {"cifar10": "CIFAR-10", "imagenet32": "ImageNet-32x32", "cifar100": "CIFAR-100",
            "svhn": "SVHN"}
VARIANTS = {"c": "C-NCSN++", "u": "U-NCSN++", "qc": "QC-NCSN++"}
PC_DATASETS = ("cifar10", "imagenet32")
PC_VARIANTS = ("u", "qc")
PC_NFES = (500, 1000, 2000)
LCSS_MODELS = {"ncsnpp": "NCSN++", "ncsnpp_deep": "NCSN++ deep", "ddpmpp": "DDPM++",
               "ddpmpp_deep": "DDPM++ deep"}
LCSS_OBJECTIVES = {"dsm": "DSM", "lcss": "LCSS"}
#: The two blocks of QCSGM Tables 3 and 5, as the paper prints them.
QCSGM_BLOCKS = (("cifar10", "imagenet32"), ("cifar100", "svhn"))

#: Evaluation-JSON key -> (column header, decimals as the papers print them; None: a.bc eN).
METRICS = {"nfe": ("NFE ↓", 0), "fid": ("FID ↓", 2), "is": ("IS ↑", 2),
           "precision": ("Precision ↑", 4), "recall": ("Recall ↑", 4),
           "bpd": ("bits/dim ↓", 2), "asym": ("Asym ↓", None), "nasym": ("NAsym ↓", None)}
QCSGM_TABLE3_METRICS = ("nfe", "fid", "is", "precision", "recall")
QCSGM_TABLE4_METRICS = ("fid", "is", "precision", "recall")
QCSGM_TABLE5_METRICS = ("bpd", "asym", "nasym")
LCSS_TABLE3_METRICS = ("fid", "is", "bpd")

# QCSGM paper, Table 3 (ODE sampler), one row per (data set, method), in the order of
# QCSGM_TABLE3_METRICS: NFE, FID, IS, Precision, Recall.
QCSGM_TABLE3 = {
    ("cifar10", "c"): ("442", "16.43", "8.19", "0.5587", "0.6117"),
    ("cifar10", "u"): ("170", "7.48", "9.24", "0.6083", "0.6204"),
    ("cifar10", "qc"): ("124", "7.21", "9.25", "0.6099", "0.6205"),
    ("imagenet32", "c"): ("422", "23.91", "8.64", "0.5416", "0.5391"),
    ("imagenet32", "u"): ("148", "17.09", "9.80", "0.5541", "0.5488"),
    ("imagenet32", "qc"): ("115", "16.62", "9.85", "0.5556", "0.5515"),
    ("cifar100", "c"): ("381", "17.79", "8.40", "0.5650", "0.6146"),
    ("cifar100", "u"): ("168", "8.95", "10.09", "0.5890", "0.6321"),
    ("cifar100", "qc"): ("131", "8.90", "10.12", "0.5903", "0.6373"),
    ("svhn", "c"): ("498", "25.09", "2.93", "0.5314", "0.5494"),
    ("svhn", "u"): ("209", "16.08", "3.17", "0.5553", "0.6268"),
    ("svhn", "qc"): ("126", "15.15", "3.24", "0.5865", "0.6512"),
}
# QCSGM paper, Table 4 (PC sampler), one row per (data set, method, NFE), in the order of
# QCSGM_TABLE4_METRICS: FID, IS, Precision, Recall.
QCSGM_TABLE4 = {
    ("cifar10", "u", 500): ("3.77", "9.41", "0.6573", "0.6010"),
    ("cifar10", "qc", 500): ("3.75", "9.52", "0.6603", "0.6028"),
    ("cifar10", "u", 1000): ("2.50", "9.58", "0.6682", "0.6026"),
    ("cifar10", "qc", 1000): ("2.48", "9.70", "0.6686", "0.6048"),
    ("cifar10", "u", 2000): ("2.20", "9.89", "0.6756", "0.6035"),
    ("cifar10", "qc", 2000): ("2.33", "9.91", "0.6759", "0.6036"),
    ("imagenet32", "u", 500): ("24.85", "9.32", "0.6113", "0.5014"),
    ("imagenet32", "qc", 500): ("24.78", "9.45", "0.6345", "0.5048"),
    ("imagenet32", "u", 1000): ("19.82", "9.89", "0.6048", "0.5202"),
    ("imagenet32", "qc", 1000): ("19.62", "9.94", "0.6108", "0.5216"),
    ("imagenet32", "u", 2000): ("19.22", "10.14", "0.6157", "0.5186"),
    ("imagenet32", "qc", 2000): ("19.48", "10.40", "0.6261", "0.5245"),
}
# QCSGM paper, Table 5, one row per (data set, method), in the order of QCSGM_TABLE5_METRICS:
# NLL (bits/dim), Asym, NAsym.
QCSGM_TABLE5 = {
    ("cifar10", "c"): ("3.89", "0.00", "0.00"),
    ("cifar10", "u"): ("3.46", "1.88 e8", "1.90 e-3"),
    ("cifar10", "qc"): ("3.38", "5.03 e7", "1.10 e-3"),
    ("imagenet32", "c"): ("4.26", "0.00", "0.00"),
    ("imagenet32", "u"): ("3.96", "2.05 e7", "7.17 e-4"),
    ("imagenet32", "qc"): ("3.83", "1.13 e7", "5.47 e-4"),
    ("cifar100", "c"): ("3.69", "0.00", "0.00"),
    ("cifar100", "u"): ("3.50", "2.98 e8", "2.25 e-3"),
    ("cifar100", "qc"): ("3.44", "9.31 e7", "1.44 e-3"),
    ("svhn", "c"): ("2.74", "0.00", "0.00"),
    ("svhn", "u"): ("2.15", "3.06 e7", "6.54 e-4"),
    ("svhn", "qc"): ("2.01", "1.69 e7", "4.80 e-4"),
}
# LCSS paper, Table 3 (CIFAR-10), one row per (model column, score matching row), in the order
# of LCSS_TABLE3_METRICS: FID, IS, BPD.
LCSS_TABLE3 = {
    ("ncsnpp", "dsm"): ("4.45", "9.86", "3.62"),
    ("ncsnpp", "lcss"): ("4.90", "9.88", "4.17"),
    ("ncsnpp_deep", "dsm"): ("4.29", "9.86", "3.38"),
    ("ncsnpp_deep", "lcss"): ("4.72", "9.95", "3.61"),
    ("ddpmpp", "dsm"): ("4.81", "9.62", "2.64"),
    ("ddpmpp", "lcss"): ("5.06", "9.63", "2.47"),
    ("ddpmpp_deep", "dsm"): ("4.49", "9.58", "2.64"),
    ("ddpmpp_deep", "lcss"): ("4.61", "9.80", "2.58"),
}

#: Every run name and the sampler its evaluation must have used (None: any).
RUN_NAMES: dict[str, str | None] = {
    **{f"qcsgm:{d}:{v}": "ode" for d in DATASETS for v in VARIANTS},
    **{f"qcsgm:{d}:{v}:pc{n}": "pc" for d in PC_DATASETS for v in PC_VARIANTS for n in PC_NFES},
    **{f"lcss:{m}:{o}": None for m in LCSS_MODELS for o in LCSS_OBJECTIVES},
}
RUN_FORMS = ("qcsgm:DATASET:VARIANT with DATASET in {cifar10, imagenet32, cifar100, svhn} and "
             "VARIANT in {c, u, qc}; qcsgm:DATASET:VARIANT:pcNFE with DATASET in {cifar10, "
             "imagenet32}, VARIANT in {u, qc} and NFE in {500, 1000, 2000}; "
             "lcss:MODEL:OBJECTIVE with MODEL in {ncsnpp, ncsnpp_deep, ddpmpp, ddpmpp_deep} and "
             "OBJECTIVE in {dsm, lcss}")
CKPT_JSON = re.compile(r"ckpt_(\d+)\.json")


def format_value(metric: str, value: float | None) -> str:
    """``value`` of ``metric`` as the papers print that column: fixed decimals, NFE as an integer
    (one decimal when a mean over batches is not one), Asym / NAsym as ``a.bc eN``; ``—`` for
    None."""
    if value is None:
        return MISSING
    decimals = METRICS[metric][1]
    if metric == "nfe" and not float(value).is_integer():
        decimals = 1
    if decimals is not None:
        return f"{value:.{decimals}f}"
    if value == 0:
        return "0.00"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa} e{int(exponent)}"


def parse_run(spec: str) -> tuple[str, str, int | None]:
    """``NAME=WORKDIR[@STEP]`` -> (name, workdir, step or None); the name is checked."""
    name, sep, location = spec.partition("=")
    if not sep or not location:
        raise ValueError(f"run {spec!r} is not NAME=WORKDIR[@STEP]; NAME is one of: {RUN_FORMS}.")
    return (check_name(name),) + split_step(location)


def check_name(name: str) -> str:
    """``name`` when it is one of ``RUN_NAMES``; else a ValueError listing the allowed forms."""
    if name not in RUN_NAMES:
        raise ValueError(f"unknown run name {name!r}; allowed: {RUN_FORMS}.")
    return name


def split_step(location: str) -> tuple[str, int | None]:
    """``WORKDIR[@STEP]`` -> (workdir, step or None); an ``@`` not followed by digits only is part
    of the path."""
    workdir, sep, step = location.rpartition("@")
    if sep and workdir and step.isdigit():
        return workdir, int(step)
    return location, None


def collect_runs(specs: list[str], runs_file: str | None) -> dict[str, tuple[str, int | None]]:
    """The runs of the ``--run`` specs and of the JSON ``runs_file``: name -> (workdir, step)."""
    pairs = [parse_run(spec) for spec in specs]
    if runs_file:
        with open(runs_file) as f:
            mapping = json.load(f)
        if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
            raise ValueError(f"{runs_file} must hold a JSON object mapping run names to "
                             f"\"WORKDIR[@STEP]\" strings.")
        pairs += [(check_name(name),) + split_step(location) for name, location in mapping.items()]
    runs: dict[str, tuple[str, int | None]] = {}
    for name, workdir, step in pairs:
        if name in runs:
            raise ValueError(f"run {name!r} is given twice ({runs[name][0]} and {workdir}); "
                             "allowed: one workdir per name.")
        runs[name] = (workdir, step)
    return runs


def evaluated_steps(workdir: str) -> list[int]:
    """The steps of the ``eval/ckpt_<step>.json`` files in ``workdir``, ascending."""
    eval_dir = os.path.join(workdir, "eval")
    names = os.listdir(eval_dir) if os.path.isdir(eval_dir) else []
    return sorted(int(m.group(1)) for m in map(CKPT_JSON.fullmatch, names) if m)


def load_result(name: str, workdir: str, step: int | None = None) -> dict[str, Any]:
    """The evaluation results of run ``name`` at ``step`` (None: the latest evaluated step), with
    the file they come from under ``"path"``; checks the sampler its table needs."""
    steps = evaluated_steps(workdir)
    if not steps:
        raise FileNotFoundError(f"run {name!r}: {os.path.join(workdir, 'eval')} holds no "
                                f"ckpt_<step>.json; evaluate it first (python main.py "
                                f"--config=... --mode=eval --workdir={workdir}).")
    step = steps[-1] if step is None else step
    if step not in steps:
        raise FileNotFoundError(f"run {name!r}: step {step} of {workdir} was not evaluated; "
                                f"evaluated steps: {steps}.")
    path = os.path.join(workdir, "eval", f"ckpt_{step}.json")
    with open(path) as f:
        result = json.load(f)
    sampler, needed = result["settings"]["sampler"], RUN_NAMES[name]
    if needed and "nfe" in result and sampler != needed:
        raise ValueError(f"run {name!r} ({path}) drew its samples with sampling.method="
                         f"{sampler!r}; its table needs {needed!r} (--config.sampling.method="
                         f"{needed}).")
    return {**result, "path": path}


def cell(result: dict[str, Any] | None, metric: str, paper: str) -> str:
    """``ours / paper`` for one metric; ours is ``—`` when the run or the metric is missing."""
    return f"{format_value(metric, (result or {}).get(metric))} / {paper}"


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a markdown table: header, separator, rows."""
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(row) + " |" for row in rows])


def qcsgm_blocks(results: dict, metrics: tuple[str, ...], paper: dict) -> list[str]:
    """The two data-set blocks of QCSGM Table 3 or 5: one row per method."""
    lines = []
    for block in QCSGM_BLOCKS:
        header = ["Method"] + [f"{DATASETS[d]} {METRICS[m][0]}" for d in block for m in metrics]
        rows = [[label] + [cell(results.get(f"qcsgm:{d}:{v}"), m, paper[(d, v)][i])
                           for d in block for i, m in enumerate(metrics)]
                for v, label in VARIANTS.items()]
        lines += markdown_table(header, rows) + [""]
    return lines


def qcsgm_table4(results: dict) -> list[str]:
    """QCSGM Table 4: one row per (NFE, method); per data set our NFE / the row's, then the
    sample metrics."""
    header = ["Method", "NFE (paper)"] + [
        f"{DATASETS[d]} {label}" for d in PC_DATASETS
        for label in ("NFE", *(METRICS[m][0] for m in QCSGM_TABLE4_METRICS))]
    rows = []
    for nfe in PC_NFES:
        for v in PC_VARIANTS:
            row = [VARIANTS[v], str(nfe)]
            for d in PC_DATASETS:
                result = results.get(f"qcsgm:{d}:{v}:pc{nfe}")
                row.append(cell(result, "nfe", str(nfe)))
                row += [cell(result, m, QCSGM_TABLE4[(d, v, nfe)][i])
                        for i, m in enumerate(QCSGM_TABLE4_METRICS)]
            rows.append(row)
    return markdown_table(header, rows) + [""]


def lcss_table3(results: dict) -> list[str]:
    """LCSS Table 3: one row per objective, the four networks side by side."""
    header = ["Score matching"] + [f"{label} {METRICS[m][0]}" for label in LCSS_MODELS.values()
                                   for m in LCSS_TABLE3_METRICS]
    rows = [[label] + [cell(results.get(f"lcss:{model}:{o}"), m, LCSS_TABLE3[(model, o)][i])
                       for model in LCSS_MODELS for i, m in enumerate(LCSS_TABLE3_METRICS)]
            for o, label in LCSS_OBJECTIVES.items()]
    return markdown_table(header, rows) + [""]


def runs_table(results: dict) -> list[str]:
    """Where each number comes from: the file, its step and the evaluation settings."""
    rows = []
    for name in RUN_NAMES:
        if name in results:
            r, settings = results[name], results[name]["settings"]
            weights = settings.get("inception_weights_sha256")
            rows.append([f"`{name}`", f"`{r['path']}`", str(r["step"]), settings["sampler"],
                         str(settings["num_samples"]), weights[:12] if weights else MISSING])
    if not rows:
        return ["No runs were given.", ""]
    return markdown_table(["Run", "Results", "Step", "Sampler", "Samples",
                           "Inception weights (SHA-256)"], rows) + [""]


def markdown(results: dict[str, dict[str, Any]], command: str) -> str:
    """The whole document: provenance, then the four tables with the papers' layouts."""
    lines = [
        "# QCSGM and LCSS result tables", "",
        f"Made by `{command}`. Each cell: ours / paper; {MISSING} where a run was not given or "
        "its evaluation did not compute the metric. Bits/dim is QCSGM's NLL column and LCSS's "
        "BPD; Asym and NAsym are means over the evaluation's noise levels (QCSGM Eqs. A10–A11).",
        "", "## Runs", "", *runs_table(results),
        "## QCSGM Table 3: ODE sampler", "",
        *qcsgm_blocks(results, QCSGM_TABLE3_METRICS, QCSGM_TABLE3),
        "## QCSGM Table 4: PC sampler at a fixed NFE", "",
        "The NFE column is the paper's row; each data set's NFE cell is the NFE the evaluation "
        "counted / the paper's.", "", *qcsgm_table4(results),
        "## QCSGM Table 5: NLL, Asym and NAsym", "",
        *qcsgm_blocks(results, QCSGM_TABLE5_METRICS, QCSGM_TABLE5),
        "## LCSS Table 3: CIFAR-10", "", *lcss_table3(results),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    """Parse the arguments, read every run, print the tables and write them to ``--out``;
    returns the markdown written."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", default=[], metavar="NAME=WORKDIR[@STEP]",
                        help="an evaluated run; NAME says which cells it fills (above)")
    parser.add_argument("--runs", default=None, metavar="FILE.json",
                        help="a JSON object mapping run names to \"WORKDIR[@STEP]\"")
    parser.add_argument("--out", default="docs/results/paper_tables.md")
    args = parser.parse_args(argv)
    runs = collect_runs(args.run, args.runs)
    results = {name: load_result(name, workdir, step) for name, (workdir, step) in runs.items()}
    command = "python experiments/paper_tables.py " + " ".join(shlex.quote(a) for a in argv)
    text = markdown(results, command)
    print(text)
    write_keeping_discussion(args.out, text)
    print(f"wrote {args.out}")
    return text


if __name__ == "__main__":
    main()
