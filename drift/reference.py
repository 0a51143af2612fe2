"""Reference profiles from files: ``.npy``, ``.npz`` and ``.csv`` to ``InputSketch`` per input.

A reference is summarized with exactly the code that summarizes traffic
(``InputSketch.update``), so a reference and a window differ only in their data. Files
are read whole (training sets that fit in memory), then summarized in row blocks so the
working set stays small.

- ``.npy``: one input tensor [rows, ...]; its name is ``--input`` (or none: it then stands
  for the version's only input).
- ``.npz``: one input per array, named by the array's key (``--input`` picks one).
- ``.csv``: numeric columns, one row per line; a first line that is not all numbers is a
  header and names the features. Empty cells and ``nan`` are missing values.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from model_server.datatypes import V2_TO_NUMPY, v2_datatype_of

from .errors import InvalidInput
from .sketch import InputSketch

__all__ = ["load_reference", "sketch_array"]

_BLOCK_ROWS = 65536


def sketch_array(array: np.ndarray, datatype: str | None = None) -> InputSketch:
    """Summarize a tensor [rows, ...] block by block."""
    if array.dtype.kind == "U":  # text arrays become BYTES, as they travel on the V2 wire
        array = np.vectorize(lambda s: s.encode("utf-8"), otypes=[object])(array)
    datatype = datatype or _datatype(array)
    if datatype in V2_TO_NUMPY and datatype != "BYTES" and array.dtype != V2_TO_NUMPY[datatype]:
        try:
            array = array.astype(V2_TO_NUMPY[datatype])
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"--datatype {datatype}: the data cannot be read as {datatype} ({exc})") from None
    sketch = InputSketch(datatype)
    rows = array.shape[0] if array.ndim else 1
    for start in range(0, rows, _BLOCK_ROWS):
        sketch.update(array[start:start + _BLOCK_ROWS] if array.ndim else array)
    return sketch


def _datatype(array: np.ndarray) -> str:
    try:
        return v2_datatype_of(array)
    except KeyError:
        raise InvalidInput(f"the data's dtype {array.dtype} has no V2 datatype (use numbers, booleans or text)") from None


def load_reference(path: Path, input_name: str | None = None, datatype: str | None = None) -> dict[str, InputSketch]:
    """The reference profile of each input in the file; raises ``InvalidInput`` naming the problem."""
    if datatype is not None and datatype not in V2_TO_NUMPY:
        raise InvalidInput(f"--datatype: expected one of {', '.join(V2_TO_NUMPY)}, got {datatype!r}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return {input_name or "": sketch_array(_load_npy(path), datatype)}
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                names = list(archive.files)
                if input_name is not None:
                    if input_name not in names:
                        raise InvalidInput(f"--input {input_name!r}: {path} holds {', '.join(names) or 'no arrays'}")
                    names = [input_name]
                return {name: sketch_array(archive[name], datatype) for name in names}
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"--data {path}: not a readable .npz archive ({exc})") from None
    if suffix == ".csv":
        array, names = _load_csv(path)
        sketch = sketch_array(array, datatype or "FP64")
        sketch.feature_names = names
        return {input_name or "": sketch}
    raise InvalidInput(f"--data {path}: expected a .npy, .npz or .csv file")


def _load_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"--data {path}: not a readable .npy array ({exc})") from None
    if array.ndim == 0 or array.shape[0] == 0:
        raise InvalidInput(f"--data {path}: expected rows of data, got an array of shape {list(array.shape)}")
    return array


def _number(cell: str) -> float | None:
    text = cell.strip()
    if not text:
        return math.nan
    try:
        return float(text)
    except ValueError:
        return None


def _load_csv(path: Path) -> tuple[np.ndarray, list[str]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            lines = [row for row in csv.reader(handle) if row]
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"--data {path}: cannot read it as UTF-8 CSV ({exc})") from None
    if not lines:
        raise InvalidInput(f"--data {path}: the file has no rows")
    names: list[str] = []
    if any(_number(cell) is None for cell in lines[0]):
        names = [cell.strip() for cell in lines[0]]
        lines = lines[1:]
    if not lines:
        raise InvalidInput(f"--data {path}: a header but no rows")
    width = len(names) or len(lines[0])
    values = np.empty((len(lines), width), dtype=np.float64)
    for i, row in enumerate(lines):
        if len(row) != width:
            raise InvalidInput(f"--data {path}: line {i + 1 + bool(names)} has {len(row)} columns, expected {width}")
        for j, cell in enumerate(row):
            number = _number(cell)
            if number is None:
                column = names[j] if names else str(j)
                raise InvalidInput(f"--data {path}: line {i + 1 + bool(names)}, column {column!r}: {cell!r} is not a "
                                   "number (CSV references are numeric; use .npy or .npz for categorical or text data)")
            values[i, j] = number
    return values, names
