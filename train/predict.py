"""Use a found model: predict the 15 keypoints of faces in a Kaggle CSV or in image files.

python -m train.predict MODEL (--data CSV | --images FILE|DIR ...) [--out predictions.csv]
                        [--lookup IdLookupTable.csv --submission submission.csv] [--draw DIR]

MODEL is anything train/model_io.py loads (exported folder, .keras, .tflite, runs:/ or models:/ URI).
Images of any size or colour are turned grey and resized to 96x96 as they are (finding and cropping
the face is the caller's job); their keypoints are scaled back to the image's own pixels. Every
output file is written to a temporary name and renamed, so a failed run leaves nothing half-written.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from train.errors import DataError, UserError, cli, first_line
from train.keypoints import COLUMNS, SIZE

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
READ_PROGRESS_EVERY = 500  # image files between progress lines
LOOKUP_COLUMNS = ("RowId", "ImageId", "FeatureName")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- inputs -----------------------------------------------------------------------------------
def image_files(args: list[str]) -> list[Path]:
    """Files as given; a folder stands for its .png/.jpg/.jpeg files, in name order."""
    files = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise DataError(f"{path}: no {'/'.join(IMAGE_SUFFIXES)} files in this folder")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    return files


def open_image(path: Path):
    """The image as the viewer shows it (EXIF rotation applied), decoded in full; one line if it can't be."""
    from PIL import Image, ImageOps
    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file fails here, not halfway through the predictions
            return ImageOps.exif_transpose(im)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None


def grey96(im) -> np.ndarray:
    from PIL import Image
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # Pillow clips 16-bit grey to 0-255 when converting to "L"; scale it instead.
        im = Image.fromarray((np.asarray(im, np.float64) / 257).clip(0, 255).astype(np.uint8))
    return np.asarray(im.convert("L").resize((SIZE, SIZE), Image.Resampling.BILINEAR), np.uint8)


def read_images(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """(n, 96, 96) grey levels and (n, 2) original widths and heights."""
    images = np.empty((len(files), SIZE, SIZE), np.uint8)
    sizes = np.empty((len(files), 2), np.float64)
    for i, path in enumerate(files):
        im = open_image(path)
        sizes[i] = im.size
        images[i] = grey96(im)
        if len(files) > READ_PROGRESS_EVERY and (i + 1) % READ_PROGRESS_EVERY == 0:
            log(f"read {i + 1}/{len(files)} images")
    return images, sizes


def read_lookup(path, ids: np.ndarray, data_path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kaggle's IdLookupTable: (RowId, face index, column index) per row, every row checked."""
    import pandas as pd

    from train.data import _where
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable CSV ({first_line(exc)})") from None
    table.columns = [str(c).strip() for c in table.columns]
    for column in LOOKUP_COLUMNS:
        if column not in table.columns:
            raise DataError(f"{path}: line 1: no '{column}' column (Kaggle's IdLookupTable has "
                            f"{', '.join(LOOKUP_COLUMNS)}, Location)")
    if table.empty:
        raise DataError(f"{path}: header only, no rows")
    position = {}
    for i, image_id in enumerate(ids.tolist()):
        if position.setdefault(image_id, i) != i:
            raise DataError(f"{data_path}: ImageId {image_id} appears more than once, so the lookup is ambiguous")
    column_index = {name: j for j, name in enumerate(COLUMNS)}
    row_ids, faces, columns = (np.empty(len(table), np.int64) for _ in range(3))
    for i, (row_id, image_id, feature) in enumerate(table[list(LOOKUP_COLUMNS)].itertuples(index=False)):
        where = lambda column: _where(path, i + 1, column)  # noqa: E731
        for column, text in (("RowId", row_id), ("ImageId", image_id)):
            if not text.strip().isdigit():
                raise DataError(f"{where(column)}: {text!r} is not a whole number")
        if int(image_id) not in position:
            raise DataError(f"{where('ImageId')}: ImageId {int(image_id)} is not in {data_path}")
        if feature.strip() not in column_index:
            raise DataError(f"{where('FeatureName')}: unknown keypoint coordinate {feature!r} "
                            f"(e.g. {COLUMNS[0]!r}, {COLUMNS[-1]!r})")
        row_ids[i], faces[i], columns[i] = int(row_id), position[int(image_id)], column_index[feature.strip()]
    return row_ids, faces, columns


# ---- outputs ----------------------------------------------------------------------------------
def write_atomic(path, write) -> None:
    """`write(tmp)` then rename: readers see the old file or the whole new one, never a part."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UserError(f"{path}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_predictions(path, names, name_column: str, pred: np.ndarray) -> None:
    import pandas as pd
    frame = pd.DataFrame(pred, columns=COLUMNS)
    frame.insert(0, name_column, names)
    write_atomic(path, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.4f"))


def write_submission(path, row_ids, faces, columns, pred: np.ndarray) -> None:
    import pandas as pd
    # Kaggle scores positions inside the 96x96 image; a prediction past the edge only costs RMSE.
    location = np.clip(pred[faces, columns], 0, SIZE)
    frame = pd.DataFrame({"RowId": row_ids, "Location": location})
    write_atomic(path, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.4f"))


def draw(im, keypoints: np.ndarray):
    """The image in colour with each keypoint as a small dot: subject's left green, right red, centre yellow."""
    from PIL import ImageDraw
    im = im.convert("RGB")
    pen = ImageDraw.Draw(im)
    r = max(1.0, max(im.size) / 160)
    for k in range(len(COLUMNS) // 2):
        name = COLUMNS[2 * k]
        colour = (0, 230, 0) if "left" in name else (255, 40, 40) if "right" in name else (255, 230, 0)
        x, y = keypoints[2 * k], keypoints[2 * k + 1]
        pen.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    return im


def draw_all(folder, names, sources, pred: np.ndarray) -> None:
    """`sources(i)` gives face i as a PIL image; drawings are named after the face, one PNG each."""
    folder, used = Path(folder), set()
    for i, name in enumerate(names):
        stem = Path(str(name)).stem
        out, k = f"{stem}.png", 1
        while out in used:  # a.jpg and a.png in one folder must not overwrite each other
            k += 1
            out = f"{stem}-{k}.png"
        used.add(out)
        picture = draw(sources(i), pred[i])
        write_atomic(folder / out, lambda tmp: picture.save(tmp, format="PNG"))


# ---- command ----------------------------------------------------------------------------------
@cli
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m train.predict", description=__doc__.splitlines()[0])
    ap.add_argument("model", metavar="MODEL",
                    help="folder with model.keras or MLmodel, a .keras or .tflite file, runs:/<id>/<path> or models:/NAME@alias")
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="Kaggle-format CSV: test.csv (ImageId, Image) or training.csv (labels ignored)")
    source.add_argument("--images", nargs="+", metavar="FILE|DIR", help="PNG/JPEG files, or folders of them")
    ap.add_argument("--out", default="predictions.csv", help="one row per face: ImageId (or File) and 30 coordinates")
    ap.add_argument("--lookup", help="Kaggle's IdLookupTable.csv (with --data and --submission)")
    ap.add_argument("--submission", help="write Kaggle's RowId,Location submission here")
    ap.add_argument("--draw", metavar="DIR", help="write each face with its keypoints drawn, as PNG")
    ap.add_argument("--tracking-uri", default=None, help="MLflow store for runs:/ and models:/ (default ./mlruns)")
    args = ap.parse_args(argv)
    if bool(args.lookup) != bool(args.submission):
        raise UserError("--lookup and --submission go together")
    if args.lookup and not args.data:
        raise UserError("--lookup needs --data: its ImageIds name faces of a Kaggle CSV")

    # Read and check every input before the (slow) model load, so a bad file fails at once.
    t0 = time.perf_counter()
    if args.data:
        from train import data as data_mod
        faces = data_mod.load(args.data)
        images, names, name_column, sizes = faces.images, faces.ids, "ImageId", None
    else:
        files = image_files(args.images)
        images, sizes = read_images(files)
        names, name_column = [str(p) for p in files], "File"
    lookup = read_lookup(args.lookup, faces.ids, args.data) if args.lookup else None
    t_read = time.perf_counter() - t0

    from train import model_io
    t0 = time.perf_counter()
    model = model_io.load(args.model, args.tracking_uri)
    t_load = time.perf_counter() - t0

    t0 = time.perf_counter()
    pred = model_io.predict(model, images, log=log)
    t_predict = time.perf_counter() - t0

    # Submission and drawings of --data faces use the model's own 96x96 frame; image files get
    # coordinates in their own pixels (plain resize, so x and y scale independently).
    scaled = pred if sizes is None else pred * np.tile(sizes / SIZE, len(COLUMNS) // 2).astype(np.float32)
    write_predictions(args.out, names, name_column, scaled)
    written = [f"{args.out} ({len(pred)} faces)"]
    if lookup is not None:
        write_submission(args.submission, *lookup, pred)
        written.append(f"{args.submission} ({len(lookup[0])} rows)")
    if args.draw:
        from PIL import Image
        if sizes is None:
            sources = lambda i: Image.fromarray(images[i])  # noqa: E731
        else:
            sources = lambda i: open_image(files[i])  # noqa: E731
        draw_all(args.draw, names, sources, scaled)
        written.append(f"{args.draw}/ ({len(pred)} drawings)")
    print(f"read {len(images)} faces in {t_read:.2f} s; {model.kind} model loaded and warmed up in {t_load:.2f} s")
    print(f"predicted {len(images)} faces in {t_predict:.3f} s ({len(images) / max(t_predict, 1e-9):,.0f} images/s)")
    print("wrote " + ", ".join(written))


if __name__ == "__main__":
    main()
