import re
import time

import pytest

from spaces import paper
from tracking import report
from tracking.mlflow_tracker import Tracker


def test_grid_expands_to_every_model_and_column():
    tuned = {"model": "cnn", "blocks": 3, "filters_1": 32, "imputation": "knn"}
    grid = paper.cells({k: v for k, v in tuned.items() if k != "imputation"})
    assert len(grid) == 7 * 7 == len({(c["cell_model"], c["cell_column"]) for c in grid})
    by_cell = {(c["cell_model"], c["cell_column"]): c for c in grid}
    assert by_cell[("kt-tuned", "ffill")] == {"model": "cnn", "blocks": 3, "filters_1": 32, "imputation": "ffill",
                                              "augment": "none", "cell_model": "kt-tuned", "cell_column": "ffill"}
    assert by_cell[("mobilenetv2-frozen", "augment")]["fine_tune"] == "frozen"
    assert by_cell[("mobilenetv2-frozen", "augment")]["imputation"] == "none"
    assert by_cell[("nasnetmobile-all", "masked+flip")]["augment"] == "flip"
    assert by_cell[("manual", "masked+augment")]["augment"] == by_cell[("manual", "augment")]["augment"]
    assert by_cell[("manual", "masked+augment")]["imputation"] == "masked"
    assert {c["cell_column"] for c in grid} == {"none", "ffill", "knn", "augment", "masked", "masked+flip",
                                                "masked+augment"}
    assert len(paper.cells()) == 42  # without a tuned CNN the grid has no kt-tuned row
    some = paper.cells(tuned, rows=["manual", "kt-tuned"])
    assert [c["cell_model"] for c in some[::7]] == ["manual", "kt-tuned"] and len(some) == 14


def test_small_cnn_cells_repeat_over_seeds_and_transfer_rows_take_their_own_cap():
    grid = paper.cells(rows=["manual", "mobilenetv2-all"], seeds=3, columns=["none", "augment"], transfer_epochs=4)
    manual = [c for c in grid if c["cell_model"] == "manual"]
    assert len(manual) == 2 * 3 and sorted(c.get("repeat", 0) for c in manual) == [0, 0, 1, 1, 2, 2]
    # repeat 0 is the plain cell, so a grid run before --seeds keeps its finished cells
    assert {k: v for k, v in manual[0].items()} == {**paper.cells(rows=["manual"])[0]}
    transfer = [c for c in grid if c["cell_model"] == "mobilenetv2-all"]
    assert len(transfer) == 2 and all(c["max_epochs"] == 4 and "repeat" not in c for c in transfer)
    assert not any("max_epochs" in c for c in manual)


def test_a_configs_repeat_changes_its_weights_and_its_cap_its_epochs(tiny_csv):
    from train import data as data_mod
    from train.trial import TrialSettings, run_trial
    data = data_mod.load(tiny_csv)
    settings = TrialSettings(epochs=2, patience=5, split="random")
    config = {"model": "cnn", "blocks": 1, "filters_1": 4, "dense_units": 8, "batch_size": 16}
    plain, again = run_trial(config, data, settings), run_trial(config, data, settings)
    other = run_trial({**config, "repeat": 1}, data, settings)
    capped = run_trial({**config, "max_epochs": 1}, data, settings)
    assert plain.metrics["rmse"] == again.metrics["rmse"] != other.metrics["rmse"]
    assert plain.metrics["epochs"] == 2 and capped.metrics["epochs"] == 1


@pytest.mark.parametrize("flags, message", [
    (["--space", "paper", "--columns", "none,bogus"], "--columns 'none,bogus': choose from none, ffill"),
    (["--space", "cnn", "--columns", "none"], "use it with --space paper"),
    (["--space", "cnn", "--seeds", "2"], "use them with --space paper"),
    (["--space", "paper", "--seeds", "0"], "must be at least 1"),
    (["--space", "paper", "--rows", "manual,bogus"], "--rows 'manual,bogus': choose from baseline, manual, kt-tuned"),
    (["--space", "paper", "--rows", ","], "choose from"),
    (["--space", "cnn", "--rows", "manual"], "use it with --space paper"),
])
def test_bad_rows_are_one_line_errors_before_any_data_is_read(flags, message, capsys):
    from search import run as search_run
    with pytest.raises(SystemExit) as exit_:
        search_run.main([*flags, "--data", "does-not-exist.csv"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "does-not-exist" not in err and len(err.strip().splitlines()) == 1


def _store(rmse, study="paper"):
    """A small MLflow store holding finished grid cells with known metrics."""
    tracker = Tracker("paper")
    from mlflow.entities import Metric
    parent = tracker.open_search(study, "manual", {"space": "paper", "epochs": 3})
    now = int(time.time() * 1000)
    for (model, column), value in rmse.items():
        run_id = tracker.start_trial(parent, study, "manual", 0, {"model": model, "cell_model": model,
                                                                  "cell_column": column})
        params = {"baseline": 1_883_613, "manual": 237_246}[model]
        metrics = {"rmse": value, "params": params, "size_mb": params * 12e-6, "epochs": 2 + (column == "none"),
                   "inference_s_per_100": 0.3 if model == "baseline" else 0.07,
                   "train_images": {"none": 100, "augment": 500}.get(column, 300), "mean_face_rmse": 7.25}
        tracker.client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()] +
                                 [Metric("val_rmse", value + 1, now, 0), Metric("val_rmse", value, now, 1)])
        tracker.client.set_terminated(run_id, "FINISHED")
    return tracker


def test_report_renders_tables_plots_and_findings_from_a_store(tmp_path):
    rmse = {("baseline", "none"): 3.0, ("baseline", "ffill"): 2.8, ("baseline", "knn"): 2.9,
            ("baseline", "augment"): 2.5, ("baseline", "masked"): 2.4, ("baseline", "masked+flip"): 2.2,
            ("manual", "none"): 3.5, ("manual", "ffill"): 3.1, ("manual", "knn"): 3.0,
            ("manual", "augment"): 3.2, ("manual", "masked"): 2.9, ("manual", "masked+flip"): 2.7,
            ("baseline", "masked+augment"): 2.3, ("manual", "masked+augment"): 2.75}
    _store(rmse)
    _store({("manual", "masked"): 0.5}, study="another")  # another grid in the same store stays out
    report.main(["--space", "paper", "--output", str(tmp_path / "out")])
    md = _squeezed(tmp_path / "out" / "report.md")
    assert "| baseline | 3.000 | 2.800 | 2.900 | 2.500 | 2.400 | 2.200 | 2.300 |" in md
    assert "| manual | 3.500 | 3.100 | 3.000 | 3.200 | 2.900 | 2.700 | 2.750 |" in md
    assert "| baseline | 1,883,613 | 1,890,366 | 22.60 | 7.60 |" in md  # ours beside the paper's Table 1
    assert "| manual | 237,246 | 235,834 | 2.85 | 1.00 |" in md
    assert "| baseline | " + " | ".join(["0.3000"] * 7) + " | 1.99 / 1.97 / 1.98 / 2.01 |" in md  # Table 3
    assert "| Gao 2018 | 14-layer custom CNN | 1.75 |" in md and "| this study's best cell | see above | 2.20 |" in md
    assert "n/a" not in md
    assert "For 1 of 2 models the paper's augmentation column beats" in md and "(baseline)" in md
    assert "baseline 2.50 vs 2.80 px (ffill); manual 3.20 vs 3.00 px (knn)" in md
    assert "For 2 of 2 models a masked-loss column beats every paper column" in md
    assert "masked+augment vs augment baseline 2.30 vs 2.50 px; manual 2.75 vs 3.20 px" in md
    assert "no finished cell" not in md
    assert "Lowest RMSE: baseline / masked+flip at 2.200 px" in md
    assert "Best under 250K params: manual / masked+flip at 2.700 px" in md
    assert "at most 3 epochs per cell (2–3 run" in md  # budget read from the search run
    assert "2 of 14 cells used their whole epoch budget" in md
    assert "| 100 | 300 | 300 | 500 | 300 | 300 | 300 |" in md
    assert "Predicting the mean training face for every validation face scores **7.250 px**" in md
    assert "ImageNet" in md and "weights=None" in md
    for png in ("rmse_by_model.png", "tradeoff.png", "curves.png"):
        assert (tmp_path / "out" / png).stat().st_size > 1000
    assert "<table>" in (tmp_path / "out" / "report.html").read_text()

    report.main(["--space", "paper", "--study", "another", "--output", str(tmp_path / "other")])
    md = _squeezed(tmp_path / "other" / "report.md")
    assert "| manual | 0.500 |" in md and "baseline" not in md.split("## Table 1")[1].split("## Where")[0]
    assert "no finished cell in this study (not run yet, or added to the grid after it ran): none, ffill" in md


def _squeezed(path):
    """The report's Markdown with table padding collapsed, so rows read as `| a | b |`."""
    return re.sub(r"(?<=\S) {2,}(?=\|)|(?<=\|) {2,}", " ", path.read_text())


def test_report_without_a_grid_is_a_one_line_error():
    with pytest.raises(SystemExit) as exit_:
        report.main(["--space", "paper"])
    assert exit_.value.code == 2
