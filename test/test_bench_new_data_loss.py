"""The new-data loss benchmark reads run folders and reports what their metrics say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.bench_new_data_loss import at_samples, first_below, load_run, table


def _run(tmp_path: Path, name: str, algo: str, losses: list, held_from: int) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"algo": algo, "seed": 3}))
    rows = []
    for i, loss in enumerate(losses):
        rows.append({"iteration": i, "samples": 1000 + 800 * i, "model_loss_new_data": loss, "model_loss": 0.05,
                     "model_success": 0.5, "collect_success": 0.25, "eval_success": 1.0 if i >= held_from else 0.0})
    (d / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return d


def test_columns_first_crossing_and_held_come_from_the_metrics(tmp_path: Path) -> None:
    d = _run(tmp_path, "mal-s3", "mal", [None, 9.0, 2.0, 0.6, 0.4, 0.45, 0.3], held_from=4)
    cfg, rows = load_run(d)
    assert at_samples(rows, 1000) is None  # no model before the first fit
    assert at_samples(rows, 3000)["model_loss_new_data"] == 2.0  # the last round by 3,000 (2,600)
    assert at_samples(rows, 9000) is None  # the run ended at 5,800: no figure past its end
    assert first_below(rows, 0.5) == 4200 and first_below(rows, 0.1) is None
    text = table([("mal-s3", cfg, rows)], (2600, 5000), 0.5)
    assert "| `mal-s3` | mal | 3 | 2.00 (0.050; 0.50 / 0.25) | 0.45 (0.050; 0.50 / 0.25) | 4,200 | 4,200 |" in text
    assert "- mal (1 runs): median new-data loss <= 0.5 first at 4200, median 90% held at 4200" in text
    slow = _run(tmp_path, "mal-s4", "mal", [None, 9.0, 0.8, 0.7, 0.6, 0.6, 0.6], held_from=99)  # never below
    two = table([("mal-s3", cfg, rows), ("mal-s4", *load_run(slow))], (2600,), 0.5)
    # one of two never got there (that run ended at 5,800): the median is a lower bound
    assert "median new-data loss <= 0.5 first at >=5000, median 90% held at >=5000" in two


def test_a_folder_without_the_metric_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no metrics.jsonl"):
        load_run(tmp_path)
    d = _run(tmp_path, "old", "pal", [None, None], held_from=9)
    with pytest.raises(SystemExit, match="model_loss_new_data"):
        load_run(d)
