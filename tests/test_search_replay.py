"""The search replay's arithmetic (benchmarks/search_replay.py): a proposal replays the nearest
recorded config of its cell, and the shares and quartiles keep `never` as such."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import curves  # noqa: E402
import search_replay  # noqa: E402


@pytest.fixture
def table(tmp_path, monkeypatch):
    """Three recorded configs of two epochs: two in the (16, gaussian) cell, one diverged."""
    rows = []
    for number, (latent, kl, curve, diverged) in enumerate(
        [(16, 0.2, [9.0, 8.0], False), (16, 5.0, [8.5, 7.5], False), (8, 1.0, [9.5], True)]
    ):
        for epoch, value in enumerate(curve, 1):
            rows.append({
                "dataset": "mnist", "config": number, "latent_dim": latent, "kl_weight": kl,
                "sigma_x": 0.1, "likelihood": "gaussian", "lr": 1e-3, "epoch": epoch,
                "val_bpd": value, "train_loss": 0.0, "epoch_seconds": 0.1,
                "diverged": diverged and epoch == len(curve),
            })  # fmt: skip
    monkeypatch.setattr(curves, "FOLDER", tmp_path)
    pq.write_table(pa.Table.from_pylist(rows, schema=curves.SCHEMA), tmp_path / "mnist-0.parquet")
    return curves.Curves("mnist")


def test_a_proposal_replays_the_nearest_recorded_config_of_its_cell(table):
    near = {"latent_dim": 16, "likelihood": "gaussian", "sigma_x": 0.1, "lr": 1e-3}
    assert table.nearest({**near, "kl_weight": 0.3}) == 0  # nearer 0.2 than 5 on a log scale
    assert table.nearest({**near, "kl_weight": 2.0}) == 1
    assert table.nearest({**near, "latent_dim": 8, "kl_weight": 9.0}) == 2  # its cell's only
    assert table.best == 7.5 and table.diverged == [False, False, True]


def test_shares_and_quartiles_keep_never():
    assert search_replay.share_to_reach(8.0, [9.0, 8.5, 7.9, 7.0], budget=8) == 3 / 8
    assert search_replay.share_to_reach(6.0, [9.0, 8.5], budget=8) == math.inf
    assert search_replay.quartiles([0.1, 0.2, math.inf, math.inf]) == (0.1, 0.2, math.inf)
    assert search_replay.quartiles([0.4, 0.1, 0.3, 0.2]) == (0.1, 0.2, 0.3)
