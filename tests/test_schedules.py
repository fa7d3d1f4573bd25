"""A schedule re-planned to fit the time a trial has left ends where the full plan would have ended."""
import numpy as np
import pytest

from tests.fixtures import write_training_csv
from train import data
from train.schedules import Replannable, learning_rate
from train.trial import TrialSettings, run_trial

ONECYCLE = {"learning_rate": 1e-2, "schedule": "onecycle"}


def _lr(schedule, step) -> float:
    return float(np.asarray(schedule(step)))


def test_an_unreplanned_plan_is_the_schedule_itself_and_a_replanned_one_is_continuous_and_ends_decayed():
    inner = learning_rate(ONECYCLE, 1000)
    plan = Replannable(learning_rate(ONECYCLE, 1000), 1000)
    for step in (0, 1, 150, 299, 300, 301, 700, 999, 1000):
        assert _lr(plan, step) == _lr(inner, step)  # bit for bit: a trial with time to spare trains as before
    before = _lr(plan, 400)
    plan.replan(400, 600)
    assert _lr(plan, 400) == pytest.approx(before, rel=1e-6)  # no jump where the plan changes
    assert _lr(plan, 500) == pytest.approx(_lr(inner, 700), rel=1e-5)  # the rest runs three times as fast
    assert _lr(plan, 600) == pytest.approx(_lr(inner, 1000), rel=1e-5)  # and ends fully decayed
    assert _lr(plan, 900) == pytest.approx(_lr(inner, 1000), rel=1e-5)  # and stays there
    plan.replan(500, 550)  # a second re-plan starts from where the first one is, not from the full plan
    assert _lr(plan, 500) == pytest.approx(_lr(inner, 700), rel=1e-5)
    assert _lr(plan, 550) == pytest.approx(_lr(inner, 1000), rel=1e-5)
    plan.replan(525, 825)  # later, when the pace improves: slower, still from where it is
    assert _lr(plan, 525) == pytest.approx(_lr(inner, 850), rel=1e-5)
    assert _lr(plan, 675) == pytest.approx(_lr(inner, 925), rel=1e-5)
    assert _lr(plan, 825) == pytest.approx(_lr(inner, 1000), rel=1e-5)
    again = Replannable.from_config(plan.get_config())
    assert _lr(again, 525) == pytest.approx(_lr(plan, 525), rel=1e-6)


def test_a_replan_reaches_the_compiled_train_step():
    import keras
    plan = Replannable(keras.optimizers.schedules.PolynomialDecay(1.0, 10, end_learning_rate=0.0), 10)  # 1 - s/10
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(optimizer=keras.optimizers.SGD(plan), loss=lambda y, pred: keras.ops.mean(pred))  # gradient 1
    x, y = np.ones((1, 1), "float32"), np.zeros((1, 1), "float32")
    model.train_on_batch(x, y)  # step 0 at rate 1.0, traced before any re-plan
    plan.replan(1, 4)  # the 9 planned steps left now run in 3
    model.train_on_batch(x, y)  # step 1: planned step 1, rate 0.9
    model.train_on_batch(x, y)  # step 2: planned step 4, rate 0.6 (0.8 if the trace had kept the old plan)
    assert float(model.get_weights()[0][0, 0]) == pytest.approx(-(1.0 + 0.9 + 0.6), rel=1e-5)


def _clock(*lefts):
    """The time left as the trial's clock reads it at each epoch's end."""
    it = iter(lefts)
    return lambda: next(it)


CONFIG = {"model": "cnn", "blocks": 2, "filters_1": 8, "filters_2": 8, "dense_units": 0, "augment": "none",
          "optimizer": "adam", **ONECYCLE}


def _final_rate(result, epochs) -> tuple[float, float]:
    batch = int(result.config["batch_size"])
    steps = -(-result.metrics["train_images"] // batch)
    final = learning_rate(ONECYCLE, steps * epochs)(steps * epochs)
    return float(np.asarray(result.model.optimizer.learning_rate)), float(np.asarray(final))


def test_a_trial_whose_epochs_will_not_fit_ends_its_schedule_in_the_time_left(tmp_path):
    faces = data.load(write_training_csv(tmp_path / "t.csv", n=24))
    settings = TrialSettings(epochs=8, split="random", patience=100)
    replans = []
    # 10 s an epoch after the first; at the end of epoch 3, 35 s left: 2 epochs and the reserve fit
    result = run_trial(CONFIG, faces, settings, seconds_left=_clock(55, 45, 35, 25, 15), on_replan=replans.append,
                       out_dir=tmp_path / "short")
    assert replans == [5] and result.metrics["epochs"] == 5
    trained, decayed = _final_rate(result, 8)
    assert trained == pytest.approx(decayed, rel=1e-4)  # it ended where the 8-epoch plan ends

    roomy = run_trial(CONFIG, faces, settings, seconds_left=lambda: 1e9, on_replan=replans.append,
                      out_dir=tmp_path / "roomy")
    plain = run_trial(CONFIG, faces, settings, out_dir=tmp_path / "plain")
    assert replans == [5] and roomy.metrics["epochs"] == plain.metrics["epochs"] == 8
    assert roomy.metrics["rmse"] == plain.metrics["rmse"]  # time to spare: trained exactly as without a clock


def test_a_pace_that_improves_moves_the_end_back_out(tmp_path):
    faces = data.load(write_training_csv(tmp_path / "t.csv", n=24))
    settings = TrialSettings(epochs=10, split="random", patience=100)
    replans = []
    # 10 s an epoch, then 1 s: the pace over epochs 2.. falls to 7, then 5.5 s
    result = run_trial(CONFIG, faces, settings, seconds_left=_clock(55, 45, 35, 34, 33, 32, 31, 30, 29, 28),
                       on_replan=replans.append, out_dir=tmp_path / "o")
    assert replans == [5, 7, 10] and result.metrics["epochs"] == 10
    trained, decayed = _final_rate(result, 10)
    assert trained == pytest.approx(decayed, rel=1e-4)


@pytest.mark.parametrize("lefts, end", [((50, 40, 20), 4),  # one epoch fits only without the reserve: it runs
                                        ((50, 40, 15), 3)])  # not even one: training stops now
def test_under_two_epochs_left_the_schedule_ends_with_the_next_epoch_or_now(tmp_path, lefts, end):
    faces = data.load(write_training_csv(tmp_path / "t.csv", n=24))
    replans = []
    result = run_trial(CONFIG, faces, TrialSettings(epochs=8, split="random", patience=100),
                       seconds_left=_clock(*lefts), on_replan=replans.append, out_dir=tmp_path / "o")
    assert replans == [end] and result.metrics["epochs"] == end
    if end == 4:
        trained, decayed = _final_rate(result, 8)
        assert trained == pytest.approx(decayed, rel=1e-4)
