"""The 15 Kaggle keypoints, their column names and their left/right mirror pairs."""

SIZE = 96  # images are SIZE x SIZE grey levels
# The pixel grid: a horizontal flip of the image maps the point at x to FLIP_X - x. 95 puts pixel
# centres on integer coordinates, 96 on half-integers; rotations and heatmap cells use this grid.
FLIP_X = 96.0

NAMES = [
    "left_eye_center", "right_eye_center",
    "left_eye_inner_corner", "left_eye_outer_corner",
    "right_eye_inner_corner", "right_eye_outer_corner",
    "left_eyebrow_inner_end", "left_eyebrow_outer_end",
    "right_eyebrow_inner_end", "right_eyebrow_outer_end",
    "nose_tip",
    "mouth_left_corner", "mouth_right_corner",
    "mouth_center_top_lip", "mouth_center_bottom_lip",
]
COLUMNS = [f"{name}_{axis}" for name in NAMES for axis in ("x", "y")]


def _mirror(name: str) -> str:
    if "left" in name:
        return name.replace("left", "right")
    return name.replace("right", "left")


# Column permutation that a horizontal flip applies: "left" is the subject's left, so after
# mirroring the image the point that was the left eye is now where the right eye belongs.
FLIP_PERMUTATION = [COLUMNS.index(_mirror(col)) for col in COLUMNS]


# The flip of a *label*: the labels are not mirror-symmetric. Each keypoint was marked a little right
# of where its mirror image would put it, so a mirrored face's label for keypoint k is
# FLIP_AXES[k] - x (x of the keypoint it came from), not FLIP_X - x. Measured by
# `python -m bench.flip --model runs/finalize/search-default/select_c0f8cf7d_seed1`: the axis at which a
# model trained without flip predicts a mirrored face as it predicts the face itself, per keypoint,
# averaged over each left/right pair, on the 523 validation faces of the shared data. Mirrored
# validation labels about these axes score 1.491 px against its predictions; about 96, 1.916 px
# (unmirrored faces: 1.394 px). One value per keypoint, in NAMES order.
FLIP_AXES = [
    97.33, 97.33,   # eye centres
    97.26, 97.40,   # left eye inner, outer corner
    97.26, 97.40,   # right eye inner, outer corner
    97.38, 97.12,   # left eyebrow inner, outer end
    97.38, 97.12,   # right eyebrow inner, outer end
    98.24,          # nose tip
    97.25, 97.25,   # mouth corners
    97.91, 97.86,   # top, bottom lip centre
]
