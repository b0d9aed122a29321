"""``experiments/paper_tables.py``: the papers' image tables from evaluation outputs.

The fast tests read evaluation files written here in the format of ``sgm_jax.evaluate.images``; the
slow ones read the files of a real tiny run (``configs/ve/cifar10_u.py`` at 16×16, nf 8, on tfds
mock data) evaluated by ``main.run`` with the ODE sampler and, from a copy of its checkpoint, with
the PC sampler. The run stops at step 0 (``train`` saves the initial state and evaluates it):
what the tables read does not depend on training, and the train step's compilation would be
the most expensive part of the test.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "experiments"))
import paper_tables  # noqa: E402
import report  # noqa: E402

NUM_EXAMPLES = 64
TINY = {
    "data.image_size": 16, "model.nf": 8, "model.ch_mult": (1, 2), "model.num_res_blocks": 1,
    "model.attn_resolutions": (8,), "sde.num_scales": 10, "training.batch_size": 16,
    "training.n_iters": 0, "training.n_jitted_steps": 1, "training.snapshot_freq": 2,
    "training.snapshot_sampling": False, "eval.batch_size": 16, "eval.num_samples": 16,
    "eval.enable_fid": False, "eval.bpd_num_examples": 16, "eval.bpd_repeats": 1,
    "eval.bpd_rtol": 1e-3, "eval.bpd_atol": 1e-3, "eval.asym_num_levels": 2,
    "eval.asym_num_examples": 16, "sampling.rtol": 1e-3, "sampling.atol": 1e-3,
}
#: Every number transcribed from the papers, with its metric.
PAPER_CONSTANTS = [(metric, row[i]) for metrics, table in (
    (paper_tables.QCSGM_TABLE3_METRICS, paper_tables.QCSGM_TABLE3),
    (paper_tables.QCSGM_TABLE4_METRICS, paper_tables.QCSGM_TABLE4),
    (paper_tables.QCSGM_TABLE5_METRICS, paper_tables.QCSGM_TABLE5),
    (paper_tables.LCSS_TABLE3_METRICS, paper_tables.LCSS_TABLE3))
    for row in table.values() for i, metric in enumerate(metrics)]


# --------------------------------------------------------------------------- reading the output


def section(text: str, heading: str) -> str:
    """The body of the ``## heading`` section."""
    start = text.index(f"## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


def tables(text: str) -> list[list[list[str]]]:
    """The markdown tables of ``text``: rows of cells, header first, separator dropped."""
    found, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            if not line.startswith("|---"):
                current.append([c.strip() for c in line.strip("|").split(" | ")])
        elif current:
            found.append(current)
            current = []
    return found


def cell(table: list[list[str]], row: tuple[str, ...], column: str) -> str:
    """The cell of ``table`` in the row whose first cells are ``row`` and in ``column``."""
    (match,) = [r for r in table[1:] if tuple(r[:len(row)]) == row]
    return match[table[0].index(column)]


def scientific(text: str) -> float:
    """An ``a.bc eN`` cell value as a float, after checking its form."""
    mantissa, exponent = text.split(" e")
    assert len(mantissa) == 4 and mantissa[1] == "." and int(exponent) == float(exponent)
    return float(f"{mantissa}e{exponent}")


# --------------------------------------------------------------------------- fast: formatting


@pytest.mark.parametrize("metric, value, text", [
    ("fid", 7.4849, "7.48"), ("is", 10.095, "10.10"), ("precision", 0.60834, "0.6083"),
    ("recall", 0.6, "0.6000"), ("bpd", 3.456, "3.46"), ("nfe", 170.0, "170"),
    ("nfe", 142.5, "142.5"), ("asym", 1.8849e8, "1.88 e8"), ("nasym", 0.0019, "1.90 e-3"),
    ("asym", 5.0e-5, "5.00 e-5"), ("asym", 0.0, "0.00"), ("fid", None, "—"),
])
def test_format_value_by_hand(metric, value, text):
    assert paper_tables.format_value(metric, value) == text


def test_the_papers_numbers_are_printed_as_ours_would_be():
    """Every number transcribed from the papers is what ``format_value`` prints for it: ours and
    the paper's stand in the same form in every cell."""
    assert len(PAPER_CONSTANTS) == 60 + 48 + 36 + 24
    for metric, text in PAPER_CONSTANTS:
        assert paper_tables.format_value(metric, float(text.replace(" e", "e"))) == text


# --------------------------------------------------------------------------- fast: written runs


def write_result(workdir, step: int, sampler: str = "ode", **metrics) -> dict:
    """An ``eval/ckpt_<step>.json`` with the keys and settings ``sgm_jax.evaluate.images`` writes."""
    result = {"step": step, **metrics, "settings": {
        "sampler": sampler, "sampling": {"method": sampler}, "num_samples": 50000,
        "batch_size": 1024, "inception_weights_sha256": "ab" * 32, "params": "ema"}}
    os.makedirs(os.path.join(workdir, "eval"), exist_ok=True)
    with open(os.path.join(workdir, "eval", f"ckpt_{step}.json"), "w") as f:
        json.dump(result, f)
    return result


FULL = {"nfe": 131.0, "fid": 15.154, "is": 3.2449, "precision": 0.58654, "recall": 0.65116,
        "bpd": 2.0149, "asym": 1.6921e7, "nasym": 4.7951e-4}


def test_latest_step_is_the_largest_and_a_step_can_be_chosen(tmp_path):
    run = str(tmp_path / "svhn_qc")
    write_result(run, 2, **{**FULL, "fid": 99.0})
    write_result(run, 10, **FULL)
    os.makedirs(os.path.join(run, "eval", "ckpt_30"))  # a resumable evaluation's units
    with open(os.path.join(run, "eval", "ckpt_40.json.tmp"), "w") as f:
        f.write("{")  # an interrupted write
    assert paper_tables.evaluated_steps(run) == [2, 10]
    assert paper_tables.load_result("qcsgm:svhn:qc", run)["step"] == 10
    assert paper_tables.load_result("qcsgm:svhn:qc", run, 2)["fid"] == 99.0
    with pytest.raises(FileNotFoundError, match=r"step 3 .* evaluated steps: \[2, 10\]"):
        paper_tables.load_result("qcsgm:svhn:qc", run, 3)
    with pytest.raises(FileNotFoundError, match="holds no ckpt_<step>.json"):
        paper_tables.load_result("qcsgm:svhn:qc", str(tmp_path / "not_evaluated"))


def test_every_metric_lands_in_its_cell(tmp_path):
    ode, pc, lcss = (str(tmp_path / name) for name in ("svhn_qc", "imagenet32_u_pc", "ddpmpp"))
    write_result(ode, 10, **FULL)
    write_result(pc, 7, "pc", **{**FULL, "nfe": 2000.0, "fid": 19.3051})
    write_result(lcss, 5, "pc", **{**FULL, "fid": 4.5049, "is": 9.6951, "bpd": 2.5849})
    out = tmp_path / "tables.md"
    text = paper_tables.main(["--run", f"qcsgm:svhn:qc={ode}", "--run",
                              f"qcsgm:imagenet32:u:pc2000={pc}", "--run",
                              f"lcss:ddpmpp_deep:dsm={lcss}", "--out", str(out)])
    assert out.read_text() == text
    _, block2 = tables(section(text, "QCSGM Table 3: ODE sampler"))
    expected = {"NFE ↓": "131 / 126", "FID ↓": "15.15 / 15.15", "IS ↑": "3.24 / 3.24",
                "Precision ↑": "0.5865 / 0.5865", "Recall ↑": "0.6512 / 0.6512"}
    for column, value in expected.items():
        assert cell(block2, ("QC-NCSN++",), f"SVHN {column}") == value
        assert cell(block2, ("U-NCSN++",), f"SVHN {column}").startswith("— / ")
    _, block2 = tables(section(text, "QCSGM Table 5: NLL, Asym and NAsym"))
    assert cell(block2, ("QC-NCSN++",), "SVHN bits/dim ↓") == "2.01 / 2.01"
    assert cell(block2, ("QC-NCSN++",), "SVHN Asym ↓") == "1.69 e7 / 1.69 e7"
    assert cell(block2, ("QC-NCSN++",), "SVHN NAsym ↓") == "4.80 e-4 / 4.80 e-4"
    (table4,) = tables(section(text, "QCSGM Table 4: PC sampler at a fixed NFE"))
    row = ("U-NCSN++", "2000")
    assert cell(table4, row, "ImageNet-32x32 NFE") == "2000 / 2000"
    assert cell(table4, row, "ImageNet-32x32 FID ↓") == "19.31 / 19.22"
    assert cell(table4, row, "ImageNet-32x32 Recall ↑") == "0.6512 / 0.5186"
    assert cell(table4, ("U-NCSN++", "1000"), "ImageNet-32x32 FID ↓") == "— / 19.82"
    assert cell(table4, row, "CIFAR-10 FID ↓") == "— / 2.20"
    (lcss_table,) = tables(section(text, "LCSS Table 3: CIFAR-10"))
    assert cell(lcss_table, ("DSM",), "DDPM++ deep FID ↓") == "4.50 / 4.49"
    assert cell(lcss_table, ("DSM",), "DDPM++ deep IS ↑") == "9.70 / 9.58"
    assert cell(lcss_table, ("DSM",), "DDPM++ deep bits/dim ↓") == "2.58 / 2.64"
    assert cell(lcss_table, ("LCSS",), "DDPM++ deep bits/dim ↓") == "— / 2.58"
    (runs,) = tables(section(text, "Runs"))
    assert cell(runs, ("`qcsgm:svhn:qc`",), "Results") == f"`{ode}/eval/ckpt_10.json`"
    assert cell(runs, ("`lcss:ddpmpp_deep:dsm`",), "Step") == "5"
    assert cell(runs, ("`lcss:ddpmpp_deep:dsm`",), "Inception weights (SHA-256)") == "ab" * 6


def test_runs_file_and_steps_and_the_discussion_is_kept(tmp_path):
    run = str(tmp_path / "cifar10_c")
    write_result(run, 2, **{**FULL, "bpd": 3.891})
    write_result(run, 4, **{**FULL, "bpd": 3.7})
    runs_file = tmp_path / "runs.json"
    runs_file.write_text(json.dumps({"qcsgm:cifar10:c": f"{run}@2"}))
    out = tmp_path / "tables.md"
    first = paper_tables.main(["--runs", str(runs_file), "--out", str(out)])
    block1, _ = tables(section(first, "QCSGM Table 5: NLL, Asym and NAsym"))
    assert cell(block1, ("C-NCSN++",), "CIFAR-10 bits/dim ↓") == "3.89 / 3.89"
    discussion = f"\n{report.DISCUSSION_HEADING}\n\nWhy the numbers differ.\n"
    out.write_text(first + discussion)
    paper_tables.main(["--runs", str(runs_file), "--out", str(out)])
    assert out.read_text() == first + discussion


@pytest.mark.parametrize("argv, message", [
    (["--run", "qcsgm:mnist:u=x"], "unknown run name 'qcsgm:mnist:u'"),
    (["--run", "qcsgm:cifar100:u:pc1000=x"], "unknown run name 'qcsgm:cifar100:u:pc1000'"),
    (["--run", "qcsgm:cifar10:c:pc500=x"], "unknown run name 'qcsgm:cifar10:c:pc500'"),
    (["--run", "lcss:ncsnpp"], "is not NAME=WORKDIR"),
    (["--run", "lcss:ncsnpp:dsm=a", "--run", "lcss:ncsnpp:dsm=b"], "given twice"),
])
def test_bad_run_names_are_refused(argv, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        paper_tables.main(argv + ["--out", str(tmp_path / "tables.md")])


def test_the_sampler_of_a_table_is_checked_when_samples_were_drawn(tmp_path):
    run = str(tmp_path / "cifar10_u")
    write_result(run, 4, "pc", **FULL)
    with pytest.raises(ValueError, match="sampling.method='pc'; its table needs 'ode'"):
        paper_tables.load_result("qcsgm:cifar10:u", run)
    assert paper_tables.load_result("qcsgm:cifar10:u:pc1000", run)["step"] == 4
    assert paper_tables.load_result("lcss:ncsnpp:dsm", run)["step"] == 4
    write_result(run, 6, "pc", bpd=3.5)  # no samples drawn: the sampler does not matter
    assert paper_tables.load_result("qcsgm:cifar10:u", run)["bpd"] == 3.5


def test_an_at_sign_without_digits_belongs_to_the_path():
    assert paper_tables.split_step("runs/a@b") == ("runs/a@b", None)
    assert paper_tables.split_step("runs/a@b@12") == ("runs/a@b", 12)


# --------------------------------------------------------------------------- slow: real runs


def tiny_config(**overrides):
    config = importlib.import_module("configs.ve.cifar10_u").get_config()
    for path, value in {**TINY, **overrides}.items():
        section_name, field = path.split(".")
        config[section_name][field] = value
    return config


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """One tiny U-NCSN++ run: checkpointed at step 0 and evaluated with the ODE sampler by
    ``train`` mode, and its checkpoint evaluated again with the PC sampler in a second workdir
    (samples only)."""
    import tensorflow_datasets as tfds

    import main as entry

    root = tmp_path_factory.mktemp("paper_tables")
    ode, pc = str(root / "cifar10_u_ode"), str(root / "cifar10_u_pc")
    with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
        entry.run(tiny_config(**{"sampling.method": "ode", "training.evaluate_after": True}),
                  "train", ode)
        shutil.copytree(os.path.join(ode, "checkpoints"), os.path.join(pc, "checkpoints"))
        entry.run(tiny_config(**{"sampling.method": "pc", "eval.enable_bpd": False,
                                 "eval.enable_asym": False}), "eval", pc)
    results = {}
    for name, workdir in (("ode", ode), ("pc", pc)):
        with open(os.path.join(workdir, "eval", "ckpt_0.json")) as f:
            results[name] = (workdir, json.load(f))
    return results


@pytest.mark.slow
def test_tables_of_real_evaluations(evaluated, tmp_path):
    (ode, r_ode), (pc, r_pc) = evaluated["ode"], evaluated["pc"]
    assert r_ode["settings"]["sampler"] == "ode" and r_pc["settings"]["sampler"] == "pc"
    assert r_pc["nfe"] == 20  # PC: N (1 + n_steps), N = 10
    assert r_ode["nfe"] == int(r_ode["nfe"])  # one batch of samples
    text = paper_tables.main([
        "--run", f"qcsgm:cifar10:u={ode}", "--run", f"qcsgm:cifar10:qc={ode}@0",
        "--run", f"qcsgm:cifar10:qc:pc1000={pc}", "--run", f"lcss:ncsnpp:lcss={ode}",
        "--out", str(tmp_path / "tables.md")])

    block1, block2 = tables(section(text, "QCSGM Table 3: ODE sampler"))
    for row, paper in (("U-NCSN++", "170"), ("QC-NCSN++", "124")):
        assert cell(block1, (row,), "CIFAR-10 NFE ↓") == f"{int(r_ode['nfe'])} / {paper}"
    assert cell(block1, ("U-NCSN++",), "CIFAR-10 FID ↓") == "— / 7.48"  # eval.enable_fid off
    assert cell(block1, ("C-NCSN++",), "CIFAR-10 NFE ↓") == "— / 442"
    assert cell(block1, ("U-NCSN++",), "ImageNet-32x32 NFE ↓") == "— / 148"

    block1, _ = tables(section(text, "QCSGM Table 5: NLL, Asym and NAsym"))
    assert cell(block1, ("U-NCSN++",), "CIFAR-10 bits/dim ↓") == f"{r_ode['bpd']:.2f} / 3.46"
    for metric, column, paper in (("asym", "Asym ↓", "1.88 e8"),
                                  ("nasym", "NAsym ↓", "1.90 e-3")):
        ours, theirs = cell(block1, ("U-NCSN++",), f"CIFAR-10 {column}").split(" / ")
        assert theirs == paper
        # three significant digits: the relative rounding error is at most 0.005 / 1.00
        assert scientific(ours) == pytest.approx(r_ode[metric], rel=5e-3)

    (table4,) = tables(section(text, "QCSGM Table 4: PC sampler at a fixed NFE"))
    assert cell(table4, ("QC-NCSN++", "1000"), "CIFAR-10 NFE") == "20 / 1000"
    assert cell(table4, ("QC-NCSN++", "1000"), "CIFAR-10 FID ↓") == "— / 2.48"
    assert cell(table4, ("U-NCSN++", "1000"), "CIFAR-10 NFE") == "— / 1000"

    (lcss_table,) = tables(section(text, "LCSS Table 3: CIFAR-10"))
    assert cell(lcss_table, ("LCSS",), "NCSN++ bits/dim ↓") == f"{r_ode['bpd']:.2f} / 4.17"
    assert cell(lcss_table, ("LCSS",), "NCSN++ IS ↑") == "— / 9.88"

    (runs,) = tables(section(text, "Runs"))
    assert cell(runs, ("`qcsgm:cifar10:qc:pc1000`",), "Sampler") == "pc"
    assert cell(runs, ("`qcsgm:cifar10:u`",), "Samples") == "16"
    assert cell(runs, ("`qcsgm:cifar10:u`",), "Inception weights (SHA-256)") == "—"
    for metric, constant in PAPER_CONSTANTS:
        assert f" / {constant} |" in text, (metric, constant)


@pytest.mark.slow
def test_a_run_sampled_with_the_wrong_sampler_is_refused(evaluated, tmp_path):
    (ode, _), (pc, _) = evaluated["ode"], evaluated["pc"]
    out = str(tmp_path / "tables.md")
    with pytest.raises(ValueError, match="sampling.method='pc'; its table needs 'ode'"):
        paper_tables.main(["--run", f"qcsgm:cifar10:u={pc}", "--out", out])
    with pytest.raises(ValueError, match="sampling.method='ode'; its table needs 'pc'"):
        paper_tables.main(["--run", f"qcsgm:cifar10:u:pc500={ode}", "--out", out])
