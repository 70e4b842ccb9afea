"""Data files for the command line: reading features and labels, writing predictions.

Formats, chosen by the file's suffix:

* ``.npy``: one 2-D numeric array; labels come from columns of it (by index)
  or from a second ``.npy`` file;
* ``.npz``: named arrays, features and labels under two keys ("X" and "y" by
  default);
* ``.csv``: a header line of column names, then one row of numbers per line,
  read by the standard library's ``csv`` module (quoted fields allowed) and
  NumPy: the same reader with or without pandas. Labels come from named
  columns; for classification they may be words;
* ``.parquet``: read by pandas (with pyarrow or fastparquet), which is then
  needed; labels from named columns.

Every problem with a file raises ``DataError`` (a ``ValueError``) whose
message names the file and, where there is one, the column and the line or
row: a missing key or column, a ragged or non-numeric CSV, an empty value,
NaN or infinity, an array of the wrong shape or dtype, an unreadable file.
Nothing here draws random numbers, prints or keeps state.
"""

import csv
import os
from dataclasses import dataclass

import numpy as np

__all__ = ["DataError", "Table", "check_suffix", "read_data", "read_labels", "write_table"]

SUFFIXES = (".npy", ".npz", ".csv", ".parquet")
OUTPUT_SUFFIXES = (".npy", ".csv")


class DataError(ValueError):
    """A data file that cannot give what was asked of it."""


@dataclass
class Table:
    """Features X (n, d), labels y ((n,), (n, m) or None) and, when the file
    names its columns, their names."""

    X: np.ndarray
    y: np.ndarray = None
    feature_names: list = None
    label_names: list = None


def check_suffix(path, allowed, what):
    """The file's suffix, lower case, if it is one of allowed."""
    suffix = os.path.splitext(str(path))[1].lower()
    if suffix not in allowed:
        raise DataError(f"{path}: expected a {what} file ending in {', '.join(allowed)}, "
                        f"got suffix {suffix or 'none'!r}")
    return suffix


def _names_list(names, limit=12):
    shown = ", ".join(repr(name) for name in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _column_index(spec, names, n_columns, path):
    """The index of the column named (or numbered) by spec."""
    if names is not None and spec in names:
        if names.count(spec) > 1:
            raise DataError(f"{path}: the column name {spec!r} appears {names.count(spec)} times in the header")
        return names.index(spec)
    try:
        index = int(spec)
    except ValueError:
        known = f"columns: {_names_list(names)}" if names is not None else f"{n_columns} unnamed columns"
        raise DataError(f"{path}: no column named {spec!r} ({known})") from None
    if not -n_columns <= index < n_columns:
        raise DataError(f"{path}: expected a column index in [{-n_columns}, {n_columns - 1}] "
                        f"({n_columns} columns), got {index}")
    return index % n_columns


def _label_indices(specs, names, n_columns, path):
    indices = [_column_index(str(spec), names, n_columns, path) for spec in specs]
    if len(set(indices)) != len(indices):
        raise DataError(f"{path}: a label column is named twice in {list(specs)}")
    if len(indices) >= n_columns:
        raise DataError(f"{path}: expected at least one feature column besides the label columns "
                        f"{list(specs)}, got {n_columns} column{'s' if n_columns != 1 else ''} in all")
    return indices


def _check_numeric(arr, path, what):
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{path}: expected a real numeric array{what}, got dtype {arr.dtype}")


def _check_matrix(arr, path, what=""):
    _check_numeric(arr, path, what)
    if arr.ndim != 2:
        raise DataError(f"{path}: expected a 2-D array (rows, columns){what}, got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise DataError(f"{path}: expected at least one row and one column{what}, got shape {arr.shape}")


def _check_finite(arr, path, locate):
    """Raise for the first NaN or infinite entry; locate(flat index) names it."""
    if arr.dtype.kind != "f":
        return
    bad = ~np.isfinite(arr)
    if bad.any():
        first = int(np.flatnonzero(bad.reshape(-1))[0])
        value = arr.reshape(-1)[first]
        raise DataError(f"{path}: expected finite numbers, got {value} at {locate(first)} "
                        f"({int(bad.sum())} non-finite in all)")


def _split_columns(M, indices):
    keep = np.setdiff1d(np.arange(M.shape[1]), indices)
    y = M[:, indices]
    return np.ascontiguousarray(M[:, keep]), (y[:, 0] if len(indices) == 1 else y), keep


def _load_npy(path, mmap_mode=None):
    try:
        arr = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as exc:  # numpy's parser raises many types for a foreign or truncated file
        raise DataError(f"{path}: not a readable .npy file ({type(exc).__name__}: {exc})") from None
    if not isinstance(arr, np.ndarray):  # np.load looks at the content, not the name
        arr.close()
        raise DataError(f"{path}: expected a .npy array, got an .npz archive (name it .npz)")
    return arr


def open_features(path):
    """Features X (n, d) of a ``.npy`` file, memory-mapped read-only and not
    read: its shape and dtype checked here, its values by ``fastten.fit``
    block by block as it reads them."""
    check_suffix(path, (".npy",), "data")
    X = _load_npy(path, mmap_mode="r")
    _check_matrix(X, path)
    return X


def read_labels(path):
    """Labels from a ``.npy`` file: (n,) or (n, m)."""
    check_suffix(path, (".npy",), "labels")
    y = _load_npy(path)
    if y.ndim not in (1, 2) or y.shape[0] < 1:
        raise DataError(f"{path}: expected labels of shape (n,) or (n, m), got shape {y.shape}")
    if y.dtype.kind not in "biufU":
        raise DataError(f"{path}: expected numeric or text labels, got dtype {y.dtype}")
    _check_finite(y, path, lambda i: f"row {i // (y.shape[1] if y.ndim == 2 else 1)}")
    return y


def _read_npy(path, label_columns):
    M = _load_npy(path)
    _check_matrix(M, path)
    _check_finite(M, path, lambda i: f"row {i // M.shape[1]}, column {i % M.shape[1]}")
    if not label_columns:
        return Table(M)
    indices = _label_indices(label_columns, None, M.shape[1], path)
    X, y, _ = _split_columns(M, indices)
    return Table(X, y)


def _read_npz(path, label_columns, x_key, y_key, want_labels):
    try:
        archive = np.load(path, allow_pickle=False)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as exc:
        raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    if not hasattr(archive, "files"):  # np.load read a plain .npy under an .npz name
        raise DataError(f"{path}: expected an .npz archive of named arrays, got a single array")
    with archive:
        def get(key):
            if key not in archive.files:
                raise DataError(f"{path}: no array named {key!r} (arrays: {_names_list(archive.files) or 'none'})")
            try:
                return archive[key]
            except Exception as exc:
                raise DataError(f"{path}: array {key!r} is not readable ({type(exc).__name__}: {exc})") from None

        X = get(x_key)
        _check_matrix(X, path, f" under {x_key!r}")
        _check_finite(X, path, lambda i: f"{x_key!r} row {i // X.shape[1]}, column {i % X.shape[1]}")
        if label_columns:
            indices = _label_indices(label_columns, None, X.shape[1], path)
            X, y, _ = _split_columns(X, indices)
            return Table(X, y)
        if not want_labels:
            return Table(X)
        y = get(y_key)
        if y.ndim not in (1, 2) or y.dtype.kind not in "biufU":
            raise DataError(f"{path}: expected labels under {y_key!r} of shape (n,) or (n, m), numeric or "
                            f"text, got shape {y.shape} and dtype {y.dtype}")
        _check_finite(y, path, lambda i: f"{y_key!r} row {i // (y.shape[1] if y.ndim == 2 else 1)}")
        return Table(X, y)


def _read_csv_rows(path, delimiter, header):
    """(names, rows, line numbers) of a CSV file, every row as long as the header."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            rows, lines = [], []
            for row in reader:
                if row and any(field.strip() for field in row):
                    rows.append(row)
                    lines.append(reader.line_num)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: expected a UTF-8 text file, got undecodable bytes ({exc.reason} at byte "
                        f"{exc.start})") from None
    except csv.Error as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from None
    if header:
        if not rows:
            raise DataError(f"{path}: expected a header line of column names, got an empty file")
        names = [name.strip() for name in rows[0]]
        rows, lines = rows[1:], lines[1:]
    else:
        names = None
    if not rows:
        raise DataError(f"{path}: expected at least one data row, got none")
    width = len(names) if names is not None else len(rows[0])
    for row, line in zip(rows, lines):
        if len(row) != width:
            raise DataError(f"{path}: line {line}: expected {width} fields (as in the "
                            f"{'header' if header else 'first row'}), got {len(row)}")
    return names, rows, lines


def _float_column(column, name, lines, path):
    """A column of CSV fields as float64; the first field that is not a
    number is named with its line."""
    try:
        values = np.asarray(column, dtype=np.float64)
    except ValueError:
        for field, line in zip(column, lines):
            try:
                float(field)
            except ValueError:
                shown = "an empty field" if not field.strip() else f"{field!r}"
                raise DataError(f"{path}: column {name!r}, line {line}: expected a number, got {shown}") from None
        raise
    if not np.isfinite(values).all():
        row = int(np.flatnonzero(~np.isfinite(values))[0])
        raise DataError(f"{path}: column {name!r}, line {lines[row]}: expected a finite number, "
                        f"got {column[row].strip()!r}")
    return values


def _parses_as_numbers(column):
    try:
        np.asarray(column, dtype=np.float64)
    except ValueError:
        return False
    return True


def _read_csv(path, label_columns, want_labels, numeric_labels, delimiter, header):
    names, rows, lines = _read_csv_rows(path, delimiter, header)
    columns = list(zip(*rows))
    display = names if names is not None else [str(j) for j in range(len(columns))]
    if not label_columns and want_labels:
        raise DataError(f"{path}: fitting needs labels: name their column with --label-column "
                        f"(columns: {_names_list(display)})")
    indices = _label_indices(label_columns, names, len(columns), path) if label_columns else []
    features = [j for j in range(len(columns)) if j not in indices]
    X = np.column_stack([_float_column(columns[j], display[j], lines, path) for j in features])
    table = Table(X, feature_names=[display[j] for j in features])
    if want_labels:
        labels = []
        for j in indices:
            if numeric_labels or _parses_as_numbers(columns[j]):
                labels.append(_float_column(columns[j], display[j], lines, path))
            else:  # classification: words are class labels
                labels.append(np.array([field.strip() for field in columns[j]]))
                empty = [line for field, line in zip(labels[-1], lines) if not field]
                if empty:
                    raise DataError(f"{path}: column {display[j]!r}, line {empty[0]}: expected a class label, "
                                    f"got an empty field")
        table.y = labels[0] if len(labels) == 1 else np.column_stack(labels)
        table.label_names = [display[j] for j in indices]
    return table


def _read_parquet(path, label_columns, want_labels, numeric_labels):
    try:
        import pandas as pd
    except ImportError:
        raise DataError(f"{path}: reading .parquet files needs pandas (and pyarrow or fastparquet): "
                        f"pip install pandas pyarrow") from None
    if not os.path.exists(path):
        raise FileNotFoundError(2, "No such file or directory", str(path))
    try:
        frame = pd.read_parquet(path)
    except ImportError as exc:
        raise DataError(f"{path}: reading .parquet files needs pyarrow or fastparquet ({exc})") from None
    except Exception as exc:  # the parquet engines raise their own types for a foreign file
        raise DataError(f"{path}: not a readable .parquet file ({type(exc).__name__}: {exc})") from None
    names = [str(name) for name in frame.columns]
    if not names or len(frame) == 0:
        raise DataError(f"{path}: expected at least one row and one column, got shape {frame.shape}")
    if not label_columns and want_labels:
        raise DataError(f"{path}: fitting needs labels: name their column with --label-column "
                        f"(columns: {_names_list(names)})")
    indices = _label_indices(label_columns, names, len(names), path) if label_columns else []

    def numeric(j, role):
        series = frame.iloc[:, j]
        if series.dtype.kind not in "biuf":
            raise DataError(f"{path}: column {names[j]!r}: expected numbers{role}, got dtype {series.dtype}")
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        if not np.isfinite(values).all():
            row = int(np.flatnonzero(~np.isfinite(values))[0])
            raise DataError(f"{path}: column {names[j]!r}, row {row}: expected a finite number, got {values[row]}")
        return values

    features = [j for j in range(len(names)) if j not in indices]
    table = Table(np.column_stack([numeric(j, "") for j in features]), feature_names=[names[j] for j in features])
    if want_labels:
        labels = []
        for j in indices:
            series = frame.iloc[:, j]
            if numeric_labels or series.dtype.kind in "biuf":
                labels.append(numeric(j, " (labels)"))
            else:
                if series.isna().any():
                    row = int(np.flatnonzero(series.isna().to_numpy())[0])
                    raise DataError(f"{path}: column {names[j]!r}, row {row}: expected a class label, got a "
                                    f"missing value")
                labels.append(series.astype(str).to_numpy().astype(str))
        table.y = labels[0] if len(labels) == 1 else np.column_stack(labels)
        table.label_names = [names[j] for j in indices]
    return table


def read_data(path, *, label_columns=(), want_labels=True, numeric_labels=True, x_key="X", y_key="y",
              delimiter=",", header=True):
    """Features (and labels when ``want_labels``) from a data file.

    label_columns : names or indices of the label columns (several: one output
        each). Without ``want_labels`` (prediction) they are dropped, so the
        training file can be reused. For ``.npz`` files they index the
        columns of the features array; without them labels come from
        ``y_key``.
    numeric_labels : False for classification: text labels are kept.
    delimiter, header : CSV only; without a header, columns are named by
        their index.

    Returns a ``Table``. Raises ``DataError`` naming the file, and
    ``OSError`` when it cannot be opened.
    """
    suffix = check_suffix(path, SUFFIXES, "data")
    if not os.path.exists(path):
        raise FileNotFoundError(2, "No such file or directory", str(path))
    if suffix == ".npy":
        return _read_npy(path, label_columns)
    if suffix == ".npz":
        return _read_npz(path, label_columns, x_key, y_key, want_labels)
    if suffix == ".csv":
        return _read_csv(path, label_columns, want_labels, numeric_labels, delimiter, header)
    return _read_parquet(path, label_columns, want_labels, numeric_labels)


def _field(value):
    """A value as CSV text: floats in their shortest exact form."""
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, np.generic):
        return str(value.item())
    return str(value)


def write_table(values, names, stream=None, path=None):
    """Write a (n,) or (n, m) array of predictions: to ``path`` (``.npy``: the
    array; ``.csv``: a header line of ``names``, then one row per sample), or
    as CSV to ``stream`` when path is None."""
    values = np.asarray(values)
    if path is not None:
        suffix = check_suffix(path, OUTPUT_SUFFIXES, "predictions")
        if suffix == ".npy":
            with open(path, "wb") as fh:  # a file object: numpy adds no suffix
                np.save(fh, values, allow_pickle=False)
            return
        with open(path, "w", newline="", encoding="utf-8") as fh:
            write_table(values, names, stream=fh)
        return
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(names)
    rows = values.reshape(values.shape[0], -1)
    writer.writerows([_field(value) for value in row] for row in rows)
