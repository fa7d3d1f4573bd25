"""Read Kaggle-format keypoint CSVs (training.csv / test.csv, plain or gzipped), validated and cached.

`python -m train.data PATH` prints rows, fully labelled rows, labels per keypoint and load time;
`--holdout F --out DIR` also writes a person-aware pair of CSVs: holdout.csv.gz is the *test* side of
the platform's train/validation/test split (faces no engine selects on), train.csv.gz the rest.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import re
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from train.errors import DataError, cli
from train.keypoints import COLUMNS, NAMES, SIZE

PIXELS = SIZE * SIZE
CACHE_VERSION = 1
_CHUNK = 256  # rows parsed per vectorised pass: bounds memory on Kaggle's 7,049-row file


@dataclass
class FaceData:
    images: np.ndarray     # (n, 96, 96) uint8
    keypoints: np.ndarray  # (n, 30) float32 in pixels, NaN where missing (all NaN for test.csv)
    ids: np.ndarray        # ImageId where the file has it, else 1..n
    path: str
    sha: str               # content hash of the file as stored on disk

    def __len__(self) -> int:
        return len(self.images)

    @property
    def fully_labelled(self) -> int:
        return int(np.isfinite(self.keypoints).all(axis=1).sum())

    @property
    def labelled(self) -> bool:
        return bool(np.isfinite(self.keypoints).any())

    def subset(self, index) -> "FaceData":
        return FaceData(self.images[index], self.keypoints[index], self.ids[index], self.path, self.sha)


def cache_dir() -> Path:
    root = os.environ.get("FKP_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "facial-keypoint-search"
    return Path(root)


def load(path, cache: bool = True) -> FaceData:
    """Load and validate a Kaggle-format CSV; a second load of the same content hits the cache."""
    path = str(path)
    try:
        stored = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    sha = hashlib.blake2b(stored, digest_size=20).hexdigest()
    cached = cache_dir() / f"{sha}-v{CACHE_VERSION}.npz"
    if cache and cached.exists():
        try:
            with np.load(cached) as z:
                return FaceData(z["images"], z["keypoints"], z["ids"], path, sha)
        except (OSError, ValueError, KeyError, zlib.error):
            pass  # a damaged cache entry is rebuilt below
    data = parse(_decompress(stored, path), path, sha)
    if cache:
        _write_cache(cached, data)
    return data


def _decompress(stored: bytes, path: str) -> bytes:
    if stored[:2] != b"\x1f\x8b":
        return stored
    try:
        return gzip.decompress(stored)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: unreadable or truncated gzip ({exc})") from None


def _write_cache(target: Path, data: FaceData) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, images=data.images, keypoints=data.keypoints, ids=data.ids)
        os.replace(tmp, target)  # readers never see a half-written entry
    except OSError:
        pass  # the cache is an optimisation; a read-only home must not stop training


def _where(path, row, column) -> str:
    return f"{path}: row {row} (line {row + 1}), column '{column}'"


def parse(raw: bytes, path: str = "<data>", sha: str = "") -> FaceData:
    if not raw.strip():
        raise DataError(f"{path}: empty file")
    text_head = raw[:4096].decode("utf-8-sig", errors="replace")
    header = text_head.splitlines()[0] if text_head.splitlines() else ""
    names = [c.strip() for c in header.split(",")]
    if "Image" not in names:
        for delim, label in ((";", "';'"), ("\t", "tab"), ("|", "'|'")):
            if delim in header and "Image" in header:
                raise DataError(f"{path}: line 1: columns are separated by {label}; Kaggle files use ','")
        raise DataError(f"{path}: line 1: no 'Image' column (found: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''})")
    _check_field_counts(raw, len(names), path)
    try:
        df = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False, na_filter=False,
                         encoding="utf-8-sig", skipinitialspace=True, index_col=False)
    except pd.errors.ParserError as exc:
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if m:
            raise DataError(f"{path}: line {m[2]}: expected {m[1]} fields, saw {m[3]} "
                            "(stray or missing delimiter?)") from None
        raise DataError(f"{path}: not a readable CSV ({str(exc).strip()})") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None
    df.columns = [c.strip() for c in df.columns]
    if len(df) == 0:
        raise DataError(f"{path}: header only, no data rows")
    keypoints = _parse_keypoints(df, path)
    images = _parse_pixels(df["Image"].to_numpy(dtype=object), path).reshape(-1, SIZE, SIZE)
    if "ImageId" in df.columns:
        ids = _numeric(df["ImageId"], path, "ImageId", allow_empty=False).astype(np.int64)
    else:
        ids = np.arange(1, len(df) + 1, dtype=np.int64)
    return FaceData(images, keypoints, ids, path, sha)


def _check_field_counts(raw: bytes, expected: int, path) -> None:
    """pandas would shift columns (or drop cells) on a row with an extra field: refuse it."""
    buf = np.frombuffer(raw, dtype=np.uint8)
    newlines = np.flatnonzero(buf == 10)
    if len(newlines) == 0 or newlines[-1] != len(buf) - 1:
        newlines = np.append(newlines, len(buf))
    per_line = np.bincount(np.searchsorted(newlines, np.flatnonzero(buf == 44)), minlength=len(newlines)) + 1
    starts = np.concatenate([[0], newlines[:-1] + 1])
    blank = (newlines - starts) <= 1  # empty or a lone '\r': pandas skips these
    bad = np.flatnonzero((per_line != expected) & ~blank)
    if len(bad):
        line = int(bad[0]) + 1
        raise DataError(f"{path}: line {line}: expected {expected} fields, saw {per_line[bad[0]]} "
                        "(stray or missing delimiter?)")


def _numeric(column: pd.Series, path, name, allow_empty=True) -> np.ndarray:
    text = column.str.strip()
    empty = text == ""
    values = pd.to_numeric(text.where(~empty), errors="coerce")
    bad = values.isna() & ~empty
    if not allow_empty:
        bad |= empty
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{_where(path, i + 1, name)}: {text.iloc[i]!r} is not a number")
    return values.to_numpy(dtype=np.float64)


def _parse_keypoints(df: pd.DataFrame, path) -> np.ndarray:
    out = np.full((len(df), len(COLUMNS)), np.nan, dtype=np.float32)
    for j, name in enumerate(COLUMNS):
        if name not in df.columns:
            continue
        values = _numeric(df[name], path, name)
        outside = (values < 0) | (values > SIZE)
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise DataError(f"{_where(path, i + 1, name)}: keypoint {values[i]:g} is outside the "
                            f"{SIZE}x{SIZE} image")
        out[:, j] = values
    return out


def _parse_pixels(values: np.ndarray, path) -> np.ndarray:
    """Parse space-separated grey levels without a per-row Python split on the happy path."""
    out = np.empty((len(values), PIXELS), dtype=np.uint8)
    for start in range(0, len(values), _CHUNK):
        chunk = values[start:start + _CHUNK]
        parsed = _parse_chunk_fast(chunk)
        out[start:start + len(chunk)] = parsed if parsed is not None else _parse_chunk_slow(chunk, start, path)
    return out


def _parse_chunk_fast(chunk) -> np.ndarray | None:
    """Digits-only tokens of 1-3 characters, decoded by position; None means 'look closer'."""
    buf = np.frombuffer(("\n".join(chunk) + "\n").encode("ascii", errors="replace"), dtype=np.uint8)
    sep = (buf == 32) | (buf == 10) | (buf == 9) | (buf == 13)
    digits = buf - np.uint8(48)
    if not (sep | (digits <= 9)).all():
        return None
    ends = np.flatnonzero(sep)
    starts = np.empty_like(ends)
    starts[0], starts[1:] = 0, ends[:-1] + 1
    length = ends - starts
    token = length > 0
    ends, length = ends[token], length[token]
    if len(ends) != len(chunk) * PIXELS or length.max() > 3:
        return None
    row = np.searchsorted(np.flatnonzero(buf == 10), ends)
    if (np.bincount(row, minlength=len(chunk)) != PIXELS).any():
        return None
    value = digits[ends - 1].astype(np.int32)
    two = length >= 2
    value[two] += 10 * digits[ends[two] - 2].astype(np.int32)
    three = length == 3
    value[three] += 100 * digits[ends[three] - 3].astype(np.int32)  # uint8 would wrap 300 to 44
    if value.max() > 255:
        return None
    return value.reshape(len(chunk), PIXELS).astype(np.uint8)


def _parse_chunk_slow(chunk, start: int, path) -> np.ndarray:
    """Row by row, to name the exact row and pixel at fault (or accept e.g. '12.0')."""
    out = np.empty((len(chunk), PIXELS), dtype=np.uint8)
    for k, text in enumerate(chunk):
        row = start + k + 1
        tokens = str(text).split()
        if len(tokens) != PIXELS:
            raise DataError(f"{_where(path, row, 'Image')}: {len(tokens)} pixel values, expected "
                            f"{PIXELS} ({SIZE}x{SIZE})")
        try:
            pixels = np.array(tokens, dtype=np.float64)
        except ValueError:
            for p, tok in enumerate(tokens):
                try:
                    float(tok)
                except ValueError:
                    raise DataError(f"{_where(path, row, 'Image')}: pixel {p + 1} {tok!r} is not a number") from None
        bad = ~np.isfinite(pixels) | (pixels < 0) | (pixels > 255)
        if bad.any():
            p = int(np.flatnonzero(bad)[0])
            raise DataError(f"{_where(path, row, 'Image')}: pixel {p + 1} = {tokens[p]} is outside 0-255")
        out[k] = np.rint(pixels)
    return out


def write_csv(data: FaceData, path) -> None:
    """Write Kaggle's training.csv layout (gzipped if the name ends in .gz), atomically."""
    frame = pd.DataFrame(data.keypoints, columns=COLUMNS).round(4)
    frame["Image"] = [" ".join(map(str, img.ravel().tolist())) for img in data.images]
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False, compression="gzip" if path.suffix == ".gz" else None, na_rep="")
    os.replace(tmp, path)


def summary(data: FaceData) -> str:
    labelled = np.isfinite(data.keypoints)
    lines = [f"rows: {len(data)}", f"fully labelled rows: {data.fully_labelled}", "labels per keypoint:"]
    for k, name in enumerate(NAMES):
        lines.append(f"  {name:<26} {int(labelled[:, 2 * k].sum()):>6}")
    return "\n".join(lines)


@cli
def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m train.data", description=__doc__.splitlines()[0])
    ap.add_argument("path", help="Kaggle-format CSV (.csv or .csv.gz)")
    ap.add_argument("--holdout", type=float, default=None,
                    help="also write the test side (this fraction, person-aware, e.g. 0.15) apart from the rest")
    ap.add_argument("--out", default=None, help="folder for train.csv.gz / holdout.csv.gz")
    ap.add_argument("--no-cache", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    data = load(args.path, cache=not args.no_cache)
    elapsed = time.perf_counter() - t0
    print(summary(data))
    print(f"load time: {elapsed:.3f} s")
    if args.holdout is not None:
        from train.split import split3
        if not args.out:
            raise DataError("--holdout needs --out DIR")
        if not 0 < args.holdout < 0.85:
            raise DataError("--holdout must be a fraction between 0 and 0.85")
        # The test side of the same three-way split searches use (validation 0.15, seed 0): with
        # --holdout 0.15 it is exactly the faces a default search never selects on.
        train, val, held = split3(data, 0.15, args.holdout, method="group", seed=0)
        keep = np.sort(np.concatenate([train, val]))
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_csv(data.subset(keep), out / "train.csv.gz")
        write_csv(data.subset(held), out / "holdout.csv.gz")
        print(f"wrote {out / 'train.csv.gz'} ({len(keep)} rows: training + validation) and "
              f"{out / 'holdout.csv.gz'} ({len(held)} rows: the test side, which no engine selects on)")


if __name__ == "__main__":
    main()
