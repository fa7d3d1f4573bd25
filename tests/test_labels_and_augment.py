import numpy as np
import pytest

from tests.fixtures import faces
from train import augment
from train.errors import UserError
from train.impute import impute
from train.keypoints import COLUMNS, FLIP_AXES, FLIP_X, NAMES, SIZE


def _kp():
    kp = np.arange(4 * 30, dtype=np.float32).reshape(4, 30) % 90
    kp[1, 4:8] = np.nan
    kp[2, 0] = np.nan
    return kp


def test_none_drops_incomplete_rows():
    kp = _kp()
    images = np.arange(4)[:, None, None] * np.ones((4, 2, 2))
    x, y = impute("none", images, kp)
    assert len(y) == 2 and np.isfinite(y).all()
    np.testing.assert_array_equal(x[:, 0, 0], [0, 3])


def test_ffill_takes_previous_row_and_backfills_the_first():
    kp = _kp()
    kp[0, 10] = np.nan
    _, y = impute("ffill", None, kp)
    assert y[1, 4] == kp[0, 4] and y[2, 0] == kp[1, 0]
    assert y[0, 10] == kp[1, 10]  # leading gap back-filled


def test_knn_fills_a_gap_from_the_five_nearest_faces_and_fills_every_cell():
    kp = _kp()
    _, y = impute("knn", None, kp)
    assert np.isfinite(y).all()
    # Worked by hand: seven faces; the last misses column 1. Its five nearest on column 0 are the
    # faces at 10, 11, 12, 13 and 14 (the ones at 50 and 60 are far), so the gap is (1+2+3+4+5)/5 = 3.
    small = np.array([[10, 1], [11, 2], [12, 3], [13, 4], [14, 5], [50, 90], [60, 95], [12, np.nan]], np.float32)
    _, filled = impute("knn", None, small)
    assert filled[-1, 1] == pytest.approx(3.0)
    np.testing.assert_array_equal(filled[:-1], small[:-1])  # labelled cells are never changed


def test_masked_keeps_gaps_and_unknown_strategy_is_refused():
    kp = _kp()
    _, y = impute("masked", None, kp)
    assert np.isnan(y[1, 4])
    with pytest.raises(UserError, match="unknown imputation 'mean'"):
        impute("mean", None, kp)


def test_flip_twice_is_identity_and_left_eye_becomes_right_eye():
    images, kp = faces(3, missing=0)
    fi, fk = augment.flip(images, kp)
    ffi, ffk = augment.flip(fi, fk)
    np.testing.assert_array_equal(ffi, images)
    np.testing.assert_allclose(ffk, kp, atol=1e-4)
    lx, rx = COLUMNS.index("left_eye_center_x"), COLUMNS.index("right_eye_center_x")
    eye_axis = FLIP_AXES[NAMES.index("left_eye_center")]
    np.testing.assert_allclose(fk[:, lx], eye_axis - kp[:, rx], atol=1e-4)
    assert eye_axis != FLIP_X  # the label's mirror is the measured axis, not the pixel grid's
    # the mirrored right eye's label, less the label shift, lands on the bright pixel it was drawn at
    # (the fixture draws keypoint x at pixel index round(x); the image flip maps index j to 95 - j)
    ly = COLUMNS.index("left_eye_center_y")
    for i in range(3):
        geometric_x = fk[i, lx] - (eye_axis - FLIP_X)
        assert fi[i, int(round(fk[i, ly])), int(round(geometric_x - (FLIP_X - (SIZE - 1))))] == 255


@pytest.mark.parametrize("angle", [-15, 10, 30])
def test_rotation_moves_keypoints_with_their_pixels(angle):
    image = np.zeros((SIZE, SIZE), np.float32)
    pts = np.array([[20.0, 30.0], [70.0, 40.0], [50.0, 75.0]])
    for x, y in pts.astype(int):
        image[y - 1:y + 2, x - 1:x + 2] = 255  # 3x3 blobs survive interpolation
    m, t = augment.rotation(angle)
    warped, moved = augment.affine(image, pts.ravel(), m, t)
    for x, y in moved.reshape(-1, 2):
        assert np.isfinite(x)
        patch = warped[int(round(y)) - 1:int(round(y)) + 2, int(round(x)) - 1:int(round(x)) + 2]
        assert patch.max() > 200, f"no bright pixel at moved keypoint ({x:.1f}, {y:.1f})"
    moved_away = augment.affine(image, pts.ravel(), m, t + 40)[1].reshape(-1, 2)
    assert np.isnan(moved_away).any()


def test_points_pushed_out_become_missing():
    kp = np.full(30, 50.0, np.float32)
    kp[0:2] = [90.0, 10.0]
    _, moved = augment.affine(np.zeros((SIZE, SIZE), np.float32), kp, np.eye(2), np.array([10.0, 0.0]))
    assert np.isnan(moved[0:2]).all()  # x = 100 is outside
    assert np.isfinite(moved[2:]).all()


def test_augment_counts_ops_and_leaves_intensity_ops_keypoints_alone():
    images, kp = faces(4, missing=0)
    x, y = augment.augment(images.astype(np.float32), kp, "flip,rotate,brightness,noise", copies=2, seed=0)
    assert len(x) == 4 * (1 + 1 + 2 + 2 + 2)
    np.testing.assert_array_equal(y[-8:], np.concatenate([kp, kp]))  # noise copies
    assert x.min() >= 0 and x.max() <= 255
    with pytest.raises(UserError, match="unknown augmentation 'zoom'"):
        augment.augment(images, kp, "zoom")
