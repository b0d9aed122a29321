"""``benchmarks/gpu.py`` at a tiny width on the CPU: the rows it writes and their fields."""

import json

import pytest

from benchmarks import gpu


@pytest.mark.slow
def test_gpu_benchmark_writes_every_row_it_runs(tmp_path):
    """The lazy-QC rows (both of its programs) in bfloat16 and the digits demo's train loop;
    the other variants and float32 run the same code with another config."""
    path = tmp_path / "gpu.json"
    gpu.main(["--tiny", "--mock-data", "--variants", "QC, qc_every 5", "--dtypes", "bfloat16",
              "--json", str(path)])
    result = json.loads(path.read_text())
    rows = result["rows"]
    assert list(rows) == ["digits demo", "QC, qc_every 5, batch 8, bfloat16"]
    step = rows["QC, qc_every 5, batch 8, bfloat16"]
    assert step["steps"] == 5 and step["steps_per_s"] > 0 and step["compile_s"] > 0
    assert step["xla_memory_mib"] > 0
    digits = rows["digits demo"]
    assert digits["steps"] == gpu.TINY_RUN["digits_steps"] and digits["steps_per_s"] > 0
    assert result["settings"]["tiny"]
    assert result["settings"]["model"] == json.loads(json.dumps(gpu.TINY_MODEL))
