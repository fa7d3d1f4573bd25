import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures import faces, write_training_csv
from train import data
from train.errors import DataError
from train.keypoints import COLUMNS


def test_reads_plain_gzip_crlf_and_reordered_columns(tmp_path):
    images, kp = faces(6, missing=0.5)
    plain = data.load(write_training_csv(tmp_path / "a.csv", images=images, kp=kp), cache=False)
    gz = data.load(write_training_csv(tmp_path / "a.csv.gz", images=images, kp=kp), cache=False)
    crlf = data.load(write_training_csv(tmp_path / "crlf.csv", images=images, kp=kp, newline="\r\n"), cache=False)
    np.testing.assert_array_equal(plain.images, images)
    np.testing.assert_allclose(plain.keypoints, kp, atol=1e-3)
    for other in (gz, crlf):
        np.testing.assert_array_equal(other.images, plain.images)
        np.testing.assert_array_equal(other.keypoints, plain.keypoints)
    # columns in another order plus an extra column
    import pandas as pd
    frame = pd.read_csv(tmp_path / "a.csv")
    frame["extra"] = 1
    frame[["Image", "extra", *reversed(COLUMNS)]].to_csv(tmp_path / "shuffled.csv", index=False)
    shuffled = data.load(tmp_path / "shuffled.csv", cache=False)
    np.testing.assert_array_equal(shuffled.images, plain.images)
    np.testing.assert_array_equal(shuffled.keypoints, plain.keypoints)


def test_reads_kaggle_test_layout(tmp_path):
    images, _ = faces(3)
    rows = ["ImageId,Image"] + [f"{i + 1},{' '.join(map(str, im.ravel()))}" for i, im in enumerate(images)]
    (tmp_path / "test.csv").write_text("\n".join(rows) + "\n")
    d = data.load(tmp_path / "test.csv", cache=False)
    assert list(d.ids) == [1, 2, 3]
    assert not d.labelled
    np.testing.assert_array_equal(d.images, images)


def _bad_pixels(tmp_path, mutate):
    images, kp = faces(3, missing=0)
    path = write_training_csv(tmp_path / "bad.csv", images=images, kp=kp)
    lines = path.read_text().splitlines()
    lines[2] = mutate(lines[2])  # data row 2
    path.write_text("\n".join(lines) + "\n")
    return path


def _replace_cell(column, value):
    def mutate(line):
        cells = line.split(",")
        cells[COLUMNS.index(column)] = value
        return ",".join(cells)
    return mutate


@pytest.mark.parametrize("mutate, expected", [
    (lambda l: l.rsplit(" ", 1)[0], "row 2 (line 3), column 'Image': 9215 pixel values, expected 9216"),
    (lambda l: l.rsplit(" ", 1)[0] + " abc", "row 2 (line 3), column 'Image': pixel 9216 'abc' is not a number"),
    (lambda l: l.rsplit(" ", 1)[0] + " 300", "row 2 (line 3), column 'Image': pixel 9216 = 300 is outside 0-255"),
    (_replace_cell("nose_tip_x", "n/a"), "row 2 (line 3), column 'nose_tip_x': 'n/a' is not a number"),
    (_replace_cell("nose_tip_y", "120.5"), "row 2 (line 3), column 'nose_tip_y': keypoint 120.5 is outside"),
    (_replace_cell("nose_tip_y", "-1"), "column 'nose_tip_y': keypoint -1 is outside"),
])
def test_bad_cells_name_file_row_and_column(tmp_path, mutate, expected):
    path = _bad_pixels(tmp_path, mutate)
    with pytest.raises(DataError) as err:
        data.load(path, cache=False)
    assert str(path) in str(err.value) and expected in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("content, expected", [
    (b"", "empty file"),
    (b"   \n", "empty file"),
    (",".join(COLUMNS + ["Image"]).encode() + b"\n", "header only"),
    (b"a;b;Image\n1;2;3\n", "separated by ';'"),
    (b"left_eye_center_x,foo\n1,2\n", "no 'Image' column"),
    (",".join(COLUMNS + ["Image"]).encode() + b"\n1,2,3\n", "line 2: expected 31 fields, saw 3"),
    (",".join(COLUMNS + ["Image"]).encode() + b"\n" + b"1," * 31 + b"1\n", "line 2: expected 31 fields, saw 32"),
])
def test_bad_files(tmp_path, content, expected):
    path = tmp_path / "f.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=expected):
        data.load(path, cache=False)


def test_truncated_and_corrupt_gzip(tmp_path):
    good = write_training_csv(tmp_path / "g.csv.gz", n=3)
    raw = good.read_bytes()
    (tmp_path / "cut.csv.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="cut.csv.gz: unreadable or truncated gzip"):
        data.load(tmp_path / "cut.csv.gz", cache=False)
    (tmp_path / "junk.csv.gz").write_bytes(b"\x1f\x8b" + b"junk" * 10)
    with pytest.raises(DataError, match="unreadable or truncated gzip"):
        data.load(tmp_path / "junk.csv.gz", cache=False)
    with pytest.raises(DataError, match="no such file"):
        data.load(tmp_path / "missing.csv")


def test_second_load_comes_from_cache(tmp_path, monkeypatch):
    path = write_training_csv(tmp_path / "c.csv", n=4)
    first = data.load(path)
    monkeypatch.setattr(data, "parse", lambda *a, **k: pytest.fail("cache miss: parsed again"))
    second = data.load(path)
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.keypoints, second.keypoints)


def test_cache_follows_content_not_name(tmp_path):
    path = write_training_csv(tmp_path / "c.csv", n=4, seed=1)
    first = data.load(path)
    write_training_csv(path, n=4, seed=2)  # same name, new content
    assert not np.array_equal(data.load(path).images, first.images)


def test_cli_exits_2_with_one_line_and_no_traceback(tmp_path):
    (tmp_path / "bad.csv").write_text("")
    proc = subprocess.run([sys.executable, "-m", "train.data", str(tmp_path / "bad.csv")], capture_output=True,
                          text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"error: {tmp_path / 'bad.csv'}: empty file"


def test_cli_summary(tmp_path, capsys):
    path = write_training_csv(tmp_path / "s.csv", n=10, missing=0.5)
    data.main([str(path)])
    out = capsys.readouterr().out
    full = int(np.isfinite(data.load(path).keypoints).all(1).sum())
    assert "rows: 10" in out and f"fully labelled rows: {full}" in out and "load time:" in out


NOISY = """import os
os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
os.write(2, b"I0000 00:00:1796257827.069351   30818 port.cc:153] oneDNN custom operations are on. You may see...\\n")
os.write(2, b"a line of its own\\n")
if os.environ.get("BREAK"):
    raise ImportError("broken install")
"""


@pytest.mark.parametrize("broken", [False, True])
def test_tensorflows_start_up_lines_are_held_back_and_an_import_that_fails_is_shown_whole(tmp_path, broken):
    # the lines TensorFlow 2.21 prints on some CPUs whatever TF_CPP_MIN_LOG_LEVEL says, from a stand-in package
    (tmp_path / "noisy").mkdir()
    (tmp_path / "noisy" / "__init__.py").write_text(NOISY)
    code = "from train import quiet_tf; quiet_tf.install('noisy'); import noisy; print(noisy.__loader__.name)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(__file__).parents[1])]),
           **({"BREAK": "1"} if broken else {})}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if broken:
        assert proc.returncode == 1 and "ImportError: broken install" in proc.stderr
        assert "a line of its own" in proc.stderr
    else:
        assert proc.returncode == 0 and proc.stderr == "a line of its own\n", proc.stderr
        assert proc.stdout.strip() == "noisy"  # the real loader is put back


def test_every_command_loads_tensorflow_through_the_wrapper():
    # a module that imported keras before any of ours would load TensorFlow unwrapped, its lines unheld
    code = ("import search.run, search.finalize, train.fit, train.predict, train.evaluate, tracking.leaderboard; "
            "from train import quiet_tf; import sys; print('tensorflow' in sys.modules, quiet_tf.caught())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert proc.stdout.split() == ["True", "True"], proc.stderr
