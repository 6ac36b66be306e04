"""The report figures' words and masks: what a reader is told, apart from how it looks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from calibration.eval_result import KnobPoint
from calibration.plots import cliff_title, empty_cells, heatmap, knob_labels, selection_plot, short


def test_a_cluster_without_rows_is_empty_not_zero(tmp_path: Path) -> None:
    values = np.array([[0.5, 0.7], [np.nan, np.nan], [0.0, 0.2]])
    counts = np.array([10.0, 0.0, 4.0])
    assert empty_cells(values, counts).tolist() == [[False, False], [True, True], [False, False]]
    assert not empty_cells(values, counts)[2].any()  # a measured 0 % stays a 0 %
    assert empty_cells(np.array([[0.5, np.nan]])).tolist() == [[False, True]]
    cliff = np.array([[False, True], [False, False], [True, False]])
    heatmap(tmp_path / "h.png", values, ["org/a", "b"], "t", cliff, counts)
    assert (tmp_path / "h.png").stat().st_size > 5_000


def test_cliff_title_names_held_out_domains_only_when_there_are_some() -> None:
    assert "held-out" not in cliff_title([])
    assert cliff_title(["gsm8k", "mbpp"]).endswith("in-domain test rows + held-out domains (gsm8k, mbpp)")


def test_knobs_on_one_point_share_a_label_and_crowded_labels_give_way() -> None:
    def sweep(*rows: tuple[float, float, float]) -> list[KnobPoint]:
        return [KnobPoint(k, a, c, 0.0, 0.0, 0.0, {}) for k, c, a in rows]

    points = sweep((0.0, 1.0, 0.5), (0.1, 1.0, 0.5), (0.2, 2.0, 0.6), (0.3, 3.0, 0.7), (0.4, 3.0, 0.7))
    assert knob_labels(points) == [("0-0.1", 1.0, 0.5), ("0.2", 2.0, 0.6), ("0.3-0.4", 3.0, 0.7)]
    # 0.5 sits a hair from 0.3-0.4 (under 4 % of the sweep's extent on both axes): one label, the dearer point's
    crowded = knob_labels([*points, *sweep((0.5, 3.02, 0.701))])
    assert [label for label, _, _ in crowded] == ["0-0.1", "0.2", "0.5"]


def test_model_names_are_not_cut() -> None:
    assert short("nvidia/llama-3.1-nemotron-51b-instruct") == "llama-3.1-nemotron-51b-instruct"


def test_selection_plot_marks_the_chosen_k(tmp_path: Path) -> None:
    selection = [{"k": k, "soft_top": s, "knn_weight": 0.0, "validation_quality": 0.5 + 0.01 * k + 0.001 * s}
                 for k in (4, 8, 16) for s in (1, 2)]
    selection_plot(tmp_path / "s.png", selection, "accuracy at knob 1", 8)
    assert (tmp_path / "s.png").stat().st_size > 5_000
