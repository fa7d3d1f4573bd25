import json

import keras
import numpy as np
import pytest

from train import metrics
from train.errors import UserError
from train.losses import MaskedRMSE, masked_mse
from train.models import build, resolve


@pytest.mark.parametrize("preset, paper", [("baseline", 1_890_366), ("manual", 235_834)])
def test_presets_match_the_papers_parameter_counts(preset, paper):
    assert abs(build({"model": preset}).count_params() - paper) / paper < 0.05


def test_mobilenetv2_without_weights_has_the_expected_size_and_freezes():
    full = build({"model": "mobilenetv2", "weights": None})
    assert full.count_params() == 2_296_414
    frozen = build({"model": "mobilenetv2", "fine_tune": "frozen", "alpha": 0.35})
    trainable = sum(int(np.prod(w.shape)) for w in frozen.trainable_weights)
    assert trainable == 1280 * 30 + 30  # only the Dense(30) head learns
    last = build({"model": "mobilenetv2", "fine_tune": "10", "alpha": 0.35})
    assert 1280 * 30 + 30 < sum(int(np.prod(w.shape)) for w in last.trainable_weights) < last.count_params()


def test_bad_model_configs_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown model 'resnet'"):
        build({"model": "resnet"})
    with pytest.raises(UserError, match="weights file not found"):
        build({"model": "mobilenetv2", "weights": str(tmp_path / "none.h5")})


def test_config_is_json_serialisable_and_drops_filters_of_missing_blocks():
    cfg = resolve({"model": "cnn", "blocks": 2, "filters_3": 64})
    json.dumps(cfg)
    assert "filters_3" not in cfg and cfg["filters_2"] == 64


def test_rmse_on_known_numbers_ignores_missing_cells():
    y_true = np.array([[1.0, np.nan, 3.0], [np.nan, 5.0, 6.0]])
    y_pred = np.array([[2.0, 100.0, 3.0], [100.0, 8.0, 6.0]])
    assert metrics.rmse(y_true, y_pred) == pytest.approx(np.sqrt((1 + 0 + 9 + 0) / 4))


def test_mean_face_rmse_predicts_each_keypoints_labelled_training_mean():
    y_train = np.array([[0.0, 10.0], [2.0, np.nan]])  # means (1, 10): the missing label is skipped
    y_val = np.array([[1.0, 13.0], [np.nan, 6.0]])  # errors 0, 3 and 4 over the labelled cells
    assert metrics.mean_face_rmse(y_train, y_val) == pytest.approx(np.sqrt((0 + 9 + 16) / 3))


def test_masked_loss_and_metric_ignore_nan_cells():
    y_true = np.array([[1.0, np.nan], [3.0, 4.0]], np.float32)
    y_pred = np.array([[2.0, 1e6], [3.0, 6.0]], np.float32)
    assert float(masked_mse(y_true, y_pred)) == pytest.approx((1 + 0 + 4) / 3)
    m = MaskedRMSE()
    m.update_state(y_true[:1], y_pred[:1])
    m.update_state(y_true[1:], y_pred[1:])
    assert float(m.result()) == pytest.approx(np.sqrt(5 / 3))
    complete = np.array([[1.0, 2.0]], np.float32)
    assert float(masked_mse(complete, complete + 2)) == pytest.approx(4.0)  # equals plain MSE


def test_model_size_is_the_saved_file_and_timing_reports_its_batch(tmp_path):
    model = build({"model": "cnn", "blocks": 2, "filters_1": 8, "filters_2": 8, "dense_units": 0})
    model.compile(optimizer="adam", loss=masked_mse)
    x1 = np.zeros((4, 96, 96, 1), np.float32)
    model.fit(x1, np.full((4, 30), 48.0, np.float32), epochs=1, verbose=0)  # Adam now holds two slots per weight
    model.save(tmp_path / "with_optimizer.keras")
    size = metrics.save_model(model, tmp_path / "m.keras")
    assert size == pytest.approx((tmp_path / "m.keras").stat().st_size / 1e6)
    # the measured file holds architecture and weights only: no optimizer comes back from it
    assert keras.models.load_model(tmp_path / "with_optimizer.keras").optimizer is not None
    assert getattr(keras.models.load_model(tmp_path / "m.keras"), "optimizer", None) is None
    reloaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    x = np.random.default_rng(0).uniform(0, 255, (2, 96, 96, 1)).astype(np.float32)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5)
    timing = metrics.inference_time(model, repeats=2, warmup=1)
    assert timing["inference_batch"] == 100 and timing["inference_s_per_100"] > 0 and timing["latency_ms"] > 0


def test_speed_is_the_median_of_fkp_timing_repeats_and_a_bad_count_is_refused_in_one_line(monkeypatch):
    from train import litert
    from train.errors import UserError
    monkeypatch.delenv("FKP_TIMING_REPEATS")  # the suite's conftest lowers it
    assert metrics.timing_repeats() == 20
    repeats, median = [], metrics._median_seconds
    monkeypatch.setattr(metrics, "_median_seconds", lambda fn, n: repeats.append(n) or median(fn, n))
    monkeypatch.setenv("FKP_TIMING_REPEATS", "3")
    model = keras.Sequential([keras.Input((96, 96, 1)), keras.layers.Conv2D(2, 3, strides=4), keras.layers.Flatten(),
                              keras.layers.Dense(30)])
    metrics.inference_time(model)
    litert.timing(litert.convert(model, "fp32"))
    assert repeats == [3, 6, 3, 6]  # batch, then single-image latency at twice the repeats; Keras, then LiteRT
    for bad in ("0", "two"):
        monkeypatch.setenv("FKP_TIMING_REPEATS", bad)
        with pytest.raises(UserError, match=f"FKP_TIMING_REPEATS='{bad}': expected a whole number, at least 1"):
            metrics.timing_repeats()


def test_mmacs_counts_each_layer_from_its_shapes():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)                    # 8*8 * 9*1*4  = 2304
    x = keras.layers.SeparableConv2D(6, 3, strides=2, padding="same")(x)      # 4*4 * (9*4 + 4*6) = 960
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(3)(x)                                        # 96 * 3 = 288
    assert metrics.mmacs(keras.Model(inputs, outputs)) * 1e6 == pytest.approx(2304 + 960 + 288)
    wrapped_in = keras.Input((8, 8, 1))
    assert metrics.mmacs(keras.Model(wrapped_in, keras.Model(inputs, outputs)(wrapped_in))) * 1e6 == \
        pytest.approx(3552)


def test_flip_tta_maps_the_mirrored_prediction_back_as_a_flipped_label_is_mapped():
    import keras

    from train.augment import flip
    from train.tta import flip_average
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (3, 96, 96, 1)).astype(np.float32)
    inp = keras.Input((96, 96, 1))
    # a model that reads the image: its prediction on the mirrored face differs from the plain one
    model = keras.Model(inp, keras.layers.Dense(30, kernel_initializer="glorot_uniform")(keras.layers.Flatten()(inp)))
    plain = model.predict(images, verbose=0)
    mirrored = model.predict(images[:, :, ::-1], verbose=0)
    _, back = flip(np.zeros((3, 96, 96)), mirrored)  # the labels' own mirror map, applied to the prediction
    got = flip_average(model).predict(images, verbose=0)
    assert not np.allclose(plain, back, atol=1e-3)
    assert np.allclose(got, (plain + back) / 2, atol=1e-3)
