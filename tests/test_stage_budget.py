"""A final stage's --timeout: the steps share the time by their compute, each fitted to its share, and a stage
run again without one trains the shortened steps in full."""
import json
import shutil

import pytest

from search import finalize, stage_budget
from search.stage_budget import Planned, StageBudget
from tests.fixtures import build_study


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_step_gets_the_time_left_times_its_cost_over_the_cost_of_the_steps_still_to_train():
    clock = Clock()
    budget = StageBudget(1000, used=100, tail=0, clock=clock)  # 100 s spent before a kill: 900 left
    plan = [Planned("a", 1.0), Planned("b", 2.0), Planned("b", 2.0), Planned("c", 3.0)]  # b twice: trained once
    assert budget.slot("a", plan, lambda name: False)() == pytest.approx(900 / 6)
    clock.t = 50.0  # a ended early: its time goes to the rest, shared by their cost
    assert budget.slot("b", plan, lambda name: name == "a")() == pytest.approx(850 * 2 / 5)
    assert budget.slot("c", plan, lambda name: name in {"a", "b"})() == pytest.approx(850)
    clock.t = 2000.0  # past the deadline: no time, never negative time planned
    assert budget.slot("c", plan, lambda name: False)() == pytest.approx(0.0)


def test_a_distillation_step_costs_its_teachers_forward_passes_too():
    alone, distil = stage_budget.train_cost(10, 100, 5), stage_budget.train_cost(10, 100, 5, teacher_mmacs=30)
    assert distil == pytest.approx(2 * alone)  # 3 forward passes of the student's training, 3 of the teachers'


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A real study of 6-epoch trials: long enough for a schedule to be re-planned (from its third epoch)."""
    return build_study(tmp_path_factory.mktemp("study6"), "--trials", "2", "--epochs", "6", "--patience", "100")


def test_a_stage_with_a_timeout_fits_its_steps_into_it_and_a_stage_without_one_trains_them_in_full(
        built, tmp_path, capsys, monkeypatch):
    root, data = built
    shutil.copytree(root / "mlruns", tmp_path / "mlruns")
    stage = ["--study", "s", "--data", str(data), "--top-k", "1", "--seeds", "2", "--ensemble", "2", "--distil"]
    # every epoch takes 10 s of a test clock: 180 s to train (the tail kept aside) for 4 steps of 6 epochs
    clock = Clock()
    monkeypatch.setattr(stage_budget, "_now", clock)
    ticker = finalize._Ticker.__call__

    def epoch_of_10_s(self, epoch, logs):
        clock.t += 10.0
        ticker(self, epoch, logs)
    monkeypatch.setattr(finalize._Ticker, "__call__", epoch_of_10_s)
    finalize.main([*stage, "--timeout", "270"])
    out = capsys.readouterr().out
    state = json.loads((tmp_path / "runs" / "finalize" / "s" / "state.json").read_text())["steps"]
    plan = [line for line in out.splitlines() if "--timeout 270 s" in line]
    assert plan and "4 steps planned" in plan[0]
    assert len(state) == 4  # the steps the budget planned are the steps the stage trained: 2 refits, 2 students
    epochs = {name: step["metrics"]["epochs"] for name, step in state.items()}
    assert sum(epochs.values()) * 10 <= 180 and all(step["timed"] for step in state.values())
    assert min(epochs.values()) < 6 and "schedule fitted to its time" in out
    # slots follow cost: a student pays its teachers' forward passes too (5 units to a refit's 3), so the students,
    # trained last, get the longer slots; a refit trained in full would mean the refits got the students' time
    refits = [e for name, e in epochs.items() if name.startswith("refit/")]
    students = [e for name, e in epochs.items() if name.startswith("distil/")]
    assert max(refits) < 6 and min(students) > max(refits), epochs
    spent = sum(step["metrics"]["train_s"] for step in state.values())
    finalize.main([*stage, "--timeout", "270"])  # the same stage again, as after a kill: its clock goes on
    again = capsys.readouterr().out
    assert ": training" not in again and f"{180 - spent:.0f} s to train them ({spent:.0f} s spent by the steps kept" \
        in again

    monkeypatch.setattr(stage_budget, "_now", stage_budget.time.monotonic)
    monkeypatch.setattr(finalize._Ticker, "__call__", ticker)
    finalize.main(stage)  # no time budget: every shortened step trains again, in full
    again = capsys.readouterr().out
    state = json.loads((tmp_path / "runs" / "finalize" / "s" / "state.json").read_text())["steps"]
    retrained = {line.split()[1].rstrip(":") for line in again.splitlines() if line.endswith(": training")}
    assert retrained == set(state)  # (a student's seed alone is an ensemble member: trained once, then kept)
    assert all(step["metrics"]["epochs"] == 6 and not step["timed"] for step in state.values())


def test_a_timeout_that_is_not_a_positive_number_of_seconds_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        finalize.main(["--study", "s", "--timeout", "0"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--timeout 0: must be over the 90 s kept" in err and len(err.strip().splitlines()) == 1


def test_the_stage_table_says_the_refit_epochs_were_planned_and_gives_those_each_step_trained():
    from bench.final import markdown
    chosen = {"trial": "0", "val_rmse": [1.4], "mean_val_rmse": 1.4}
    model = {"test_rmse": 1.37, "params": 10, "mmacs": 1.0, "inference_s_per_100": 0.05}
    report = {"study": "s", "chosen": chosen, "selection": {"c": chosen}, "refit_epochs": 75, "train_faces": 70,
              "val_faces": 15, "shipped": "refit/c/seed0", "models": {"refit": model},
              "training_s": {"refit/c/seed0": 634.0}, "epochs_trained": {"refit/c/seed0": 70}}
    assert "refit 75 epochs on 85 faces" in markdown(report, "best")
    timed = markdown({**report, "timeout_s": 3600}, "best")
    assert "refit 75 epochs planned on 85 faces" in timed and "`refit/c/seed0` 70 epochs in 634 s" in timed
