"""The 15 Kaggle keypoints, their column names and their left/right mirror pairs."""

SIZE = 96  # images are SIZE x SIZE grey levels
# A horizontal flip maps keypoint x to FLIP_X - x. 95 puts pixel centres on integer coordinates,
# 96 on half-integers. Measured on the shared data (`python -m bench.flip`, README): 96 fits the
# labels better than 95 (mirrored-face RMSE 2.14 vs 2.60 px), though the labels themselves imply
# about 97.4, so a flip still adds label noise; the EDGE preset trains without it.
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
