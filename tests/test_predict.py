"""train.predict: every model kind, every input kind, Kaggle's submission, and every bad input."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.fixtures import faces
from train.keypoints import COLUMNS, SIZE

TINY = {"model": "cnn", "blocks": 2, "filters_1": 8, "filters_2": 8, "dense_units": 0}


def build(seed=0, **overrides):
    import keras

    from train import models
    keras.utils.set_random_seed(seed)
    return models.build({**TINY, **overrides})


def reference(model, images):
    return np.asarray(model.predict(np.asarray(images, np.float32)[..., None], verbose=0))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """One tiny model as an exported folder, a .keras file and its fp32 LiteRT export."""
    from train import litert, metrics
    root = tmp_path_factory.mktemp("model")
    model = build()
    metrics.save_model(model, root / "export" / "model.keras")
    (root / "model_fp32.tflite").write_bytes(litert.convert(model, "fp32"))
    images, _ = faces(24)
    return {"folder": root / "export", "keras": root / "export" / "model.keras",
            "tflite": root / "model_fp32.tflite", "model": model, "expected": reference(model, images)}


def run(capsys, *argv):
    from train.predict import main
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, *argv, names=()):
    """Exit 2 with one line on stderr naming each of `names`, and no output file left behind."""
    code, _, err = run(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for name in names:
        assert str(name) in lines[0], lines[0]
    from pathlib import Path
    assert not Path("predictions.csv").exists() and not Path("submission.csv").exists()
    assert not list(Path(".").glob(".*.tmp"))
    return lines[0]


def predictions(path="predictions.csv"):
    return pd.read_csv(path)


# ---- model kinds ------------------------------------------------------------------------------
def test_exported_folder_gives_one_row_per_face_with_kaggle_columns(capsys, saved, tiny_csv):
    code, out, _ = run(capsys, saved["folder"], "--data", tiny_csv)
    assert code == 0
    table = predictions()
    assert list(table.columns) == ["ImageId", *COLUMNS]
    assert table["ImageId"].tolist() == list(range(1, 25))  # training layout: ids are row numbers
    np.testing.assert_allclose(table[COLUMNS].to_numpy(), saved["expected"], atol=1e-3)
    assert "images/s" in out  # throughput of the prediction step


def test_keras_file_and_its_fp32_litert_export_agree(capsys, saved, tiny_csv):
    assert run(capsys, saved["keras"], "--data", tiny_csv, "--out", "k.csv")[0] == 0
    assert run(capsys, saved["tflite"], "--data", tiny_csv, "--out", "t.csv")[0] == 0
    np.testing.assert_allclose(predictions("k.csv")[COLUMNS].to_numpy(), saved["expected"], atol=1e-3)
    np.testing.assert_allclose(predictions("t.csv")[COLUMNS].to_numpy(), saved["expected"], atol=0.01)


def test_mlflow_uris_find_the_run_artifact_and_the_logged_model(capsys, saved, tiny_csv, tmp_path):
    import mlflow
    import mlflow.keras

    from tracking import stores
    uri = stores.mlflow_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.create_experiment("cnn", artifact_location=stores.artifact_root() + "/cnn")
    other = build(seed=1)  # a different model under artifact path `model`, to tell the two apart
    with mlflow.start_run(experiment_id=experiment) as active:
        mlflow.log_artifact(str(saved["keras"]))  # what trials log: model.keras at the run root
        mlflow.keras.log_model(other, name="model", pip_requirements=["keras"])
    run_id = active.info.run_id
    version = mlflow.register_model(f"runs:/{run_id}/model", "fkp")
    mlflow.MlflowClient(uri).set_registered_model_alias("fkp", "best", version.version)
    other_expected = reference(other, faces(24)[0])
    assert np.abs(other_expected - saved["expected"]).max() > 0.1

    for spec, expected in ((f"runs:/{run_id}", saved["expected"]), (f"runs:/{run_id}/model.keras", saved["expected"]),
                           (f"runs:/{run_id}/model", other_expected), ("models:/fkp@best", other_expected)):
        assert run(capsys, spec, "--data", tiny_csv)[0] == 0, spec
        np.testing.assert_allclose(predictions()[COLUMNS].to_numpy(), expected, atol=1e-3, err_msg=spec)
    (tmp_path / "predictions.csv").unlink()
    refused(capsys, f"runs:/{'0' * 32}/model", "--data", tiny_csv, names=[f"runs:/{'0' * 32}/model"])
    refused(capsys, "models:/nope@best", "--data", tiny_csv, names=["models:/nope@best"])


# ---- Kaggle submission ------------------------------------------------------------------------
def kaggle_lookup(path, keypoints):
    """An IdLookupTable asking for every labelled cell, as Kaggle's asks for the cells it scores."""
    rows = [(i + 1, j) for i in range(len(keypoints)) for j in range(len(COLUMNS)) if np.isfinite(keypoints[i, j])]
    table = pd.DataFrame({"RowId": range(1, len(rows) + 1), "ImageId": [i for i, _ in rows],
                          "FeatureName": [COLUMNS[j] for _, j in rows], "Location": ""})
    table.to_csv(path, index=False)
    return rows


def test_submission_rmse_equals_train_evaluate(capsys, saved, tiny_csv):
    from train import data
    from train.evaluate import evaluate
    labels = data.load(tiny_csv).keypoints
    rows = kaggle_lookup("lookup.csv", labels)
    assert run(capsys, saved["folder"], "--data", tiny_csv, "--lookup", "lookup.csv", "--submission", "submission.csv")[0] == 0
    submission = pd.read_csv("submission.csv")
    assert list(submission.columns) == ["RowId", "Location"] and submission["RowId"].tolist() == list(range(1, len(rows) + 1))
    assert saved["expected"].min() > 0 and saved["expected"].max() < SIZE  # so clipping plays no part here
    truth = np.array([labels[i - 1, j] for i, j in rows])
    rmse = np.sqrt(np.mean((submission["Location"].to_numpy() - truth) ** 2))
    assert rmse == pytest.approx(evaluate(saved["folder"], data.load(tiny_csv))["rmse"], abs=1e-3)


def test_submission_clips_to_the_image_but_predictions_do_not(capsys, tmp_path, tiny_csv):
    import keras
    inputs = keras.Input((SIZE, SIZE, 1))
    dense = keras.layers.Dense(len(COLUMNS))
    model = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(inputs)))
    dense.set_weights([np.zeros((1, 30), np.float32), np.tile(np.float32([-7, 130]), 15)])
    model.save(tmp_path / "off.keras")
    kaggle_lookup("lookup.csv", np.zeros((2, 30)))
    assert run(capsys, tmp_path / "off.keras", "--data", tiny_csv, "--lookup", "lookup.csv", "--submission", "submission.csv")[0] == 0
    assert set(pd.read_csv("submission.csv")["Location"]) == {0.0, 96.0}
    assert set(predictions()[COLUMNS].to_numpy().ravel().round(3)) == {-7.0, 130.0}


# ---- image files ------------------------------------------------------------------------------
def test_images_of_any_size_and_colour_get_keypoints_in_their_own_pixels(capsys, saved, tmp_path):
    # A uniform grey level survives any resize exactly, so every file shows the model the same 96x96 face.
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("L", (96, 96), 100).save(folder / "a_grey.png")
    Image.new("RGB", (200, 120), (100, 100, 100)).save(folder / "b_rgb.jpg", quality=100)
    Image.new("RGBA", (50, 70), (100, 100, 100, 255)).save(folder / "c_rgba.png")
    Image.fromarray(np.full((40, 300), 100 * 257, np.uint16)).save(folder / "d_16bit.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # a phone photo stored on its side: viewers (and we) turn it upright, 120 wide
    Image.new("RGB", (200, 120), (100, 100, 100)).save(folder / "e_turned.jpg", quality=100, exif=exif)
    (folder / "notes.txt").write_text("not an image, and not in a folder's image list")
    assert run(capsys, saved["keras"], "--images", folder)[0] == 0
    table = predictions()
    assert table["File"].tolist() == [str(folder / n) for n in ("a_grey.png", "b_rgb.jpg", "c_rgba.png", "d_16bit.png",
                                                          "e_turned.jpg")]
    p96 = reference(saved["model"], np.full((1, SIZE, SIZE), 100, np.uint8))[0]
    for row, (w, h) in zip(table[COLUMNS].to_numpy(), [(96, 96), (200, 120), (50, 70), (300, 40), (120, 200)]):
        np.testing.assert_allclose(row, p96 * np.tile([w / SIZE, h / SIZE], 15), atol=2e-3)


def assert_dots(im, keypoints):
    """Left points green, right red, centre yellow; untrained models stack them, so the last drawn
    (bottom lip, a centre point) is the one sure to show at its own place."""
    rgb = im.convert("RGB")
    x, y = keypoints[-2:].round().astype(int)
    assert rgb.getpixel((int(x), int(y))) == (255, 230, 0)
    colours = {c for _, c in rgb.getcolors(maxcolors=1 << 16)}
    assert {(0, 230, 0), (255, 40, 40)} <= colours


def test_draw_writes_each_face_at_its_own_size_with_dots_on_the_keypoints(capsys, saved, tiny_csv, tmp_path):
    assert run(capsys, saved["folder"], "--data", tiny_csv, "--draw", "drawn")[0] == 0
    pred = predictions()[COLUMNS].to_numpy()
    assert sorted(p.name for p in (tmp_path / "drawn").iterdir()) == sorted(f"{i}.png" for i in range(1, 25))
    with Image.open(tmp_path / "drawn" / "3.png") as im:
        assert im.size == (SIZE, SIZE)
        assert_dots(im, pred[2])
    Image.new("RGB", (300, 200), (100, 100, 100)).save(tmp_path / "big.jpg")
    assert run(capsys, saved["keras"], "--images", tmp_path / "big.jpg", "--draw", "drawn2")[0] == 0
    with Image.open(tmp_path / "drawn2" / "big.png") as im:
        assert im.size == (300, 200)
        assert_dots(im, predictions()[COLUMNS].to_numpy()[0])


def test_progress_on_large_inputs(capsys, saved, tiny_csv, monkeypatch):
    from train import model_io
    monkeypatch.setattr(model_io, "BATCH", 4)
    monkeypatch.setattr(model_io, "PROGRESS_EVERY", 2)
    code, _, err = run(capsys, saved["folder"], "--data", tiny_csv)
    assert code == 0 and "predicted 8/24 faces" in err and "predicted 16/24 faces" in err
    np.testing.assert_allclose(predictions()[COLUMNS].to_numpy(), saved["expected"], atol=1e-3)  # padding is dropped


# ---- bad input --------------------------------------------------------------------------------
def test_wrong_data_layout_is_refused(capsys, saved, tmp_path):
    (tmp_path / "bad.csv").write_text("foo,bar\n1,2\n")
    refused(capsys, saved["folder"], "--data", tmp_path / "bad.csv", names=["bad.csv", "'Image'"])


def test_unreadable_or_corrupt_images_are_refused(capsys, saved, tmp_path):
    (tmp_path / "garbage.png").write_bytes(b"this is not a png")
    refused(capsys, saved["keras"], "--images", tmp_path / "garbage.png", names=["garbage.png"])
    Image.new("RGB", (400, 300), (10, 200, 30)).save(tmp_path / "whole.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "whole.png").read_bytes()[:-200])
    refused(capsys, saved["keras"], "--images", tmp_path / "whole.png", tmp_path / "cut.png", names=["cut.png"])
    (tmp_path / "empty").mkdir()
    refused(capsys, saved["keras"], "--images", tmp_path / "empty", names=["empty"])


def test_models_of_the_wrong_shape_are_refused(capsys, tmp_path, tiny_csv):
    import keras

    from train import litert
    inputs = keras.Input((64, 64, 1))
    keras.Model(inputs, keras.layers.Dense(30)(keras.layers.Flatten()(inputs))).save(tmp_path / "small.keras")
    refused(capsys, tmp_path / "small.keras", "--data", tiny_csv, names=["small.keras", "64, 64, 1"])
    inputs = keras.Input((SIZE, SIZE, 1))
    short = keras.Model(inputs, keras.layers.Dense(29)(keras.layers.GlobalAveragePooling2D()(inputs)))
    short.save(tmp_path / "short.keras")
    refused(capsys, tmp_path / "short.keras", "--data", tiny_csv, names=["short.keras", "29"])
    (tmp_path / "short.tflite").write_bytes(litert.convert(short, "fp32"))
    refused(capsys, tmp_path / "short.tflite", "--data", tiny_csv, names=["short.tflite", "29"])


def test_missing_or_damaged_models_are_refused(capsys, tmp_path, tiny_csv):
    refused(capsys, tmp_path / "nowhere", "--data", tiny_csv, names=["nowhere"])
    (tmp_path / "empty").mkdir()
    refused(capsys, tmp_path / "empty", "--data", tiny_csv, names=["empty", "model.keras"])
    (tmp_path / "broken.keras").write_bytes(b"PK\x03\x04 half a zip")
    refused(capsys, tmp_path / "broken.keras", "--data", tiny_csv, names=["broken.keras"])
    (tmp_path / "broken.tflite").write_bytes(b"\x00" * 64)
    refused(capsys, tmp_path / "broken.tflite", "--data", tiny_csv, names=["broken.tflite"])


def test_lookup_naming_an_unknown_feature_or_face_is_refused(capsys, saved, tiny_csv):
    kaggle_lookup("lookup.csv", np.zeros((2, 30)))
    table = pd.read_csv("lookup.csv", keep_default_na=False)
    bad = table.copy()
    bad.loc[3, "FeatureName"] = "nose_tip_z"
    bad.to_csv("feature.csv", index=False)
    args = [saved["folder"], "--data", tiny_csv, "--submission", "submission.csv", "--lookup"]
    refused(capsys, *args, "feature.csv", names=["feature.csv", "row 4", "'FeatureName'", "nose_tip_z"])
    bad = table.copy()
    bad.loc[1, "ImageId"] = 999
    bad.to_csv("face.csv", index=False)
    refused(capsys, *args, "face.csv", names=["face.csv", "row 2", "'ImageId'", "999"])
    table.drop(columns=["FeatureName"]).to_csv("layout.csv", index=False)
    refused(capsys, *args, "layout.csv", names=["layout.csv", "'FeatureName'"])


def test_flags_that_need_each_other(capsys, saved, tiny_csv, tmp_path):
    Image.new("L", (96, 96)).save(tmp_path / "face.png")
    refused(capsys, saved["folder"], "--data", tiny_csv, "--lookup", "lookup.csv", names=["--submission"])
    refused(capsys, saved["folder"], "--images", tmp_path / "face.png", "--lookup", "l.csv", "--submission", "s.csv",
            names=["--data"])


def test_a_failed_write_leaves_the_old_file_whole(tmp_path):
    from train.predict import write_atomic
    target = tmp_path / "predictions.csv"
    target.write_text("old\n")

    def half_then_fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError):
        write_atomic(target, half_then_fail)
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["predictions.csv"]


def test_test_csv_layout_keeps_its_image_ids(capsys, saved, tmp_path):
    images, _ = faces(3)
    pixels = [" ".join(map(str, img.ravel().tolist())) for img in images]
    pd.DataFrame({"ImageId": [7, 3, 11], "Image": pixels}).to_csv(tmp_path / "test.csv", index=False)
    assert run(capsys, saved["folder"], "--data", tmp_path / "test.csv")[0] == 0
    assert predictions()["ImageId"].tolist() == [7, 3, 11]
    np.testing.assert_allclose(predictions()[COLUMNS].to_numpy(), reference(saved["model"], images), atol=1e-3)


def test_evaluate_scores_every_kind_of_model_predict_takes(capsys, saved, tiny_csv):
    from train import data
    from train.evaluate import evaluate, main
    faces_ = data.load(tiny_csv)
    by_kind = {kind: evaluate(saved[kind], faces_) for kind in ("folder", "keras", "tflite")}
    assert by_kind["tflite"]["model"] == "litert" and by_kind["keras"]["model"] == "keras"
    assert by_kind["folder"]["rmse"] == pytest.approx(by_kind["keras"]["rmse"], abs=1e-6)
    assert by_kind["tflite"]["rmse"] == pytest.approx(by_kind["keras"]["rmse"], abs=1e-2)
    main([str(saved["tflite"]), "--data", str(tiny_csv)])
    assert "(litert model)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["nowhere.tflite", "--data", str(tiny_csv)])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and "nowhere.tflite" in err
