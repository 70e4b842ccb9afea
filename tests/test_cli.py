"""The command line: every command in process (``main([...])``), every bad
input it promises one line for, ``python -m fastten`` in a subprocess, and
hypothesis over garbage files and argument lists."""

import contextlib
import csv
import importlib.util
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from fastten import TwoLayerNet, fit
from fastten.cli import main
from fastten.datasets import make_planted_network

ROOT = Path(__file__).resolve().parents[1]
N, D, K = 600, 4, 2


def run(capsys, *argv):
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fastten "), err
    for fragment in fragments:
        assert fragment in lines[0], err


def write_csv(path, header, rows):
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        if header is not None:
            writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A small planted problem in every format, and a model fitted to it."""
    root = tmp_path_factory.mktemp("cli")
    net = make_planted_network(N, D, K, random_state=3)
    names = [f"x{j}" for j in range(D)]
    files = {"root": root, "X": net.X, "y": net.y}
    files["npy"] = root / "Xy.npy"
    np.save(files["npy"], np.column_stack([net.X, net.y]))
    files["X.npy"] = root / "X.npy"
    np.save(files["X.npy"], net.X)
    files["y.npy"] = root / "y.npy"
    np.save(files["y.npy"], net.y)
    files["npz"] = root / "Xy.npz"
    np.savez(files["npz"], X=net.X, y=net.y)
    files["csv"] = root / "Xy.csv"
    write_csv(files["csv"], names + ["target"], [row + [t] for row, t in zip(net.X.tolist(), net.y.tolist())])
    files["classes"] = np.where(net.y > np.median(net.y), "high", "low")
    files["class.csv"] = root / "class.csv"
    write_csv(files["class.csv"], ["label"] + names, [[c] + row for c, row in zip(files["classes"], net.X.tolist())])
    files["model"] = root / "model.npz"
    fit(net.X, net.y, K, random_state=0).save(files["model"])
    return files


# ---------------------------------------------------------------- fit

@pytest.mark.parametrize("source", ["npy", "labels", "npz", "csv", "csv-index"])
def test_fit_reads_every_format_and_matches_the_api(data, capsys, source):
    out_path = data["root"] / f"fit-{source}.npz"
    args = {"npy": [data["npy"], "--label-column", "-1"],
            "labels": [data["X.npy"], "--labels", data["y.npy"]],
            "npz": [data["npz"]],
            "csv": [data["csv"], "--label-column", "target"],
            "csv-index": [data["csv"], "--label-column", str(D)]}[source]
    code, out, err = run(capsys, "fit", *args, "-k", K, "-o", out_path, "--random-state", 0)
    assert code == 0, err
    assert err == ""
    assert f"fitted {K} sigmoid units to {N} rows x {D} features" in out
    assert out.rstrip().endswith(f"wrote {out_path}")
    # The same bits as the API's fit: the data were read exactly (CSV floats
    # round-trip through repr) and the seed was passed.
    model, expected = TwoLayerNet.load(out_path), TwoLayerNet.load(data["model"])
    np.testing.assert_array_equal(model.A1, expected.A1)
    np.testing.assert_array_equal(model.a2, expected.a2)


@pytest.mark.parametrize("one_pass", [False, True])
def test_fit_out_of_core_matches_the_api(data, capsys, one_pass):
    # The features' file memory-mapped (fit on a memmap): the network of the
    # in-memory fit up to rounding (out of core the same accumulators read
    # the same blocks: docs/api.md, "Data out of core"), or the one-pass fit.
    out_path = data["root"] / f"out-of-core-{one_pass}.npz"
    code, out, err = run(capsys, "fit", data["X.npy"], "--labels", data["y.npy"], "--out-of-core", "-k", K,
                         "-o", out_path, "--random-state", 0, "--block-rows", 256, *(["--one-pass"] * one_pass))
    assert code == 0, err
    assert f"fitted {K} sigmoid units to {N} rows x {D} features" in out
    model = TwoLayerNet.load(out_path)
    expected = fit(data["X"], data["y"], K, random_state=0, block_rows=256, one_pass=one_pass)
    assert model.diagnostics["data_passes"].get("gather") == (None if one_pass else 1)
    for name in ("A1", "b1", "a2", "b2"):
        np.testing.assert_allclose(getattr(model, name), getattr(expected, name), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("argv, fragments", [
    (["--label-column", "0"], ["--out-of-core: expected the labels from --labels FILE.npy"]),
    (["--task", "classification"], ["task: 'classification' needs the data in memory"]),
])
def test_fit_out_of_core_refusals_one_line(data, capsys, argv, fragments):
    labels = [] if "--label-column" in argv else ["--labels", data["y.npy"]]
    code, _, err = run(capsys, "fit", data["X.npy"], *labels, "--out-of-core", "-k", K, "-o",
                       data["root"] / "refused.npz", *argv)
    assert_one_line_error(code, err, *fragments)


def test_fit_out_of_core_needs_an_npy_file(data, capsys):
    code, _, err = run(capsys, "fit", data["csv"], "--labels", data["y.npy"], "--out-of-core", "-k", K, "-o",
                       data["root"] / "refused.npz")
    assert_one_line_error(code, err, "expected a data file ending in .npy")


def test_fit_passes_the_options(data, capsys):
    out_path = data["root"] / "options.npz"
    code, _, err = run(capsys, "fit", data["npz"], "-k", 3, "-o", out_path, "--activation", "tanh", "--no-refine",
                       "--alpha", "0.25", "--init", "random", "--bias-method", "zero", "--random-state", 1)
    assert code == 0, err
    model = TwoLayerNet.load(out_path)
    assert model.activation == "tanh"
    assert model.A1.shape == (D, 3)
    dg = model.diagnostics
    assert (dg["init"], dg["bias_method"], dg["alpha"], dg["refinement_iterations"]) == ("random", "zero", 0.25, 0)


# The API fits these tests compare with warn (600 rows, 10 iterations): not what they test.
@pytest.mark.filterwarnings("ignore:fit")
def test_fit_classification_with_word_labels(data, capsys):
    out_path = data["root"] / "class-model.npz"
    code, out, err = run(capsys, "fit", data["class.csv"], "--label-column", "label", "--task", "classification",
                         "-k", K, "-o", out_path, "--random-state", 0, "--max-iter", 10)
    assert code == 0, err
    model = TwoLayerNet.load(out_path)
    assert model.classes.tolist() == ["high", "low"]
    assert "classes: high, low; training accuracy" in out
    # The CLI's model is the API's on the same labels.
    expected = fit(data["X"], data["classes"], K, task="classification", random_state=0, max_iter=10)
    np.testing.assert_array_equal(model.A1, expected.A1)


def test_fit_multi_output_from_two_label_columns(data, capsys):
    path = data["root"] / "two.npy"
    np.save(path, np.column_stack([data["X"], data["y"], -2.0 * data["y"]]))
    out_path = data["root"] / "two-model.npz"
    code, out, err = run(capsys, "fit", path, "--label-column", -2, "--label-column", -1, "-k", K, "-o", out_path,
                         "--random-state", 0, "--max-iter", 5)
    assert code == 0, err
    assert "2 outputs" in out
    assert TwoLayerNet.load(out_path).a2.shape == (K, 2)


def test_fit_parquet(data, capsys):
    pd = pytest.importorskip("pandas", reason="reading .parquet needs pandas (the test extra has it)")
    pytest.importorskip("pyarrow", reason="pandas reads .parquet through pyarrow, an optional engine no extra "
                                          "installs")
    path = data["root"] / "Xy.parquet"
    frame = pd.DataFrame(data["X"], columns=[f"x{j}" for j in range(D)])
    frame["target"] = data["y"]
    frame.to_parquet(path)
    out_path = data["root"] / "parquet-model.npz"
    code, _, err = run(capsys, "fit", path, "--label-column", "target", "-k", K, "-o", out_path,
                       "--random-state", 0)
    assert code == 0, err
    np.testing.assert_array_equal(TwoLayerNet.load(out_path).A1, TwoLayerNet.load(data["model"]).A1)

    frame.loc[7, "x1"] = np.nan
    frame.to_parquet(path)
    code, _, err = run(capsys, "fit", path, "--label-column", "target", "-k", K, "-o", out_path)
    assert_one_line_error(code, err, "column 'x1', row 7", "finite")
    frame["x1"] = "text"
    frame.to_parquet(path)
    code, _, err = run(capsys, "fit", path, "--label-column", "target", "-k", K, "-o", out_path)
    assert_one_line_error(code, err, "column 'x1'", "expected numbers")


def test_fit_warnings_one_line_each(data, capsys):
    """Fewer rows than parameters: fit warns; each warning is one line."""
    path = data["root"] / "few.npy"
    np.save(path, np.column_stack([data["X"][:12], data["y"][:12]]))
    code, _, err = run(capsys, "fit", path, "--label-column", -1, "-k", 3, "-o", data["root"] / "few.npz",
                       "--random-state", 0, "--max-iter", 5)
    assert code == 0, err
    lines = err.splitlines()
    assert any("UserWarning" in line and "12 rows for 19 parameters" in line for line in lines), err
    assert all(line.startswith("fastten fit: warning: ") for line in lines), err


def test_verbose_logs_on_stderr_and_quiet_by_default(data, capsys):
    args = ["fit", data["npz"], "-k", K, "-o", data["root"] / "v.npz", "--random-state", 0]
    code, _, err = run(capsys, *args)
    assert code == 0 and err == ""
    code, _, err = run(capsys, "-vv", *args)
    assert code == 0
    assert "fastten: decompose: method=" in err  # a debug record of the decomposition
    # The handler is removed afterwards: nothing leaks into the next run.
    code, _, err = run(capsys, *args)
    assert err == ""


# ---------------------------------------------------------------- predict

def read_csv_output(text):
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], rows[1:]


def test_fit_headerless_csv_with_another_delimiter(data, capsys):
    path = data["root"] / "plain.csv"
    with open(path, "w", newline="") as fh:
        csv.writer(fh, delimiter=";").writerows(row + [t] for row, t in zip(data["X"].tolist(), data["y"].tolist()))
    out_path = data["root"] / "plain-model.npz"
    code, _, err = run(capsys, "fit", path, "--no-header", "--delimiter", ";", "--label-column", str(D), "-k", K,
                       "-o", out_path, "--random-state", 0)
    assert code == 0, err
    np.testing.assert_array_equal(TwoLayerNet.load(out_path).A1, TwoLayerNet.load(data["model"]).A1)


@pytest.mark.parametrize("source", ["X.npy", "npz"])
def test_predict_stdout_round_trips_exactly(data, capsys, source):
    code, out, err = run(capsys, "predict", data["model"], data[source])
    assert code == 0, err
    header, rows = read_csv_output(out)
    assert header == ["prediction"]
    expected = TwoLayerNet.load(data["model"]).predict(data["X"])
    np.testing.assert_array_equal(np.array([float(row[0]) for row in rows]), expected)


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_predict_to_a_file_dropping_the_label_column(data, capsys, suffix):
    out_path = data["root"] / f"pred{suffix}"
    code, out, err = run(capsys, "predict", data["model"], data["csv"], "--label-column", "target", "-o", out_path)
    assert code == 0 and out == "" and err == "", err
    expected = TwoLayerNet.load(data["model"]).predict(data["X"])
    if suffix == ".npy":
        got = np.load(out_path)
    else:
        header, rows = read_csv_output(out_path.read_text())
        assert header == ["prediction"]
        got = np.array([float(row[0]) for row in rows])
    np.testing.assert_array_equal(got, expected)


@pytest.mark.filterwarnings("ignore:fit")
def test_predict_classification(data, capsys):
    model_path = data["root"] / "class-predict.npz"
    model = fit(data["X"], data["classes"], K, task="classification", random_state=0, max_iter=10)
    model.save(model_path)
    code, out, err = run(capsys, "predict", model_path, data["class.csv"], "--label-column", "label")
    assert code == 0, err
    header, rows = read_csv_output(out)
    assert header == ["prediction"]
    assert [row[0] for row in rows] == model.predict_class(data["X"]).tolist()

    code, out, err = run(capsys, "predict", model_path, data["X.npy"], "--proba")
    assert code == 0, err
    header, rows = read_csv_output(out)
    assert header == ["proba_high", "proba_low"]
    proba = np.array(rows, dtype=float)
    np.testing.assert_array_equal(proba, model.predict_proba(data["X"]))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)  # rounding of a softmax

    code, out, err = run(capsys, "predict", model_path, data["X.npy"], "--raw")
    assert code == 0, err
    header, rows = read_csv_output(out)
    assert header == ["output_0", "output_1"]


# ---------------------------------------------------------------- info

def test_info_human_and_json(data, capsys):
    code, out, err = run(capsys, "info", data["model"])
    assert code == 0, err
    assert f"network: {D} inputs -> {K} sigmoid units -> 1 output (regression)" in out
    assert "refinement: " in out and "seconds: " in out

    code, out, err = run(capsys, "info", data["model"], "--json")
    assert code == 0, err
    record = json.loads(out)
    model = TwoLayerNet.load(data["model"])
    assert (record["n_features"], record["n_hidden"], record["n_outputs"]) == (D, K, 1)
    assert record["task"] == "regression" and record["classes"] is None
    assert record["diagnostics"]["refinement_iterations"] == model.diagnostics["refinement_iterations"]
    assert record["diagnostics"]["times"] == model.diagnostics["times"]


def test_info_of_a_network_without_diagnostics_and_with_non_finite_ones(data, capsys):
    path = data["root"] / "bare.npz"
    rng = np.random.default_rng(0)
    TwoLayerNet(rng.standard_normal((3, 2)), np.zeros(2), rng.standard_normal((2, 3)), np.zeros(3), "tanh",
                {"training_mse": float("nan"), "times": {"total": float("inf")}}).save(path)
    code, out, err = run(capsys, "info", path)
    assert code == 0, err
    assert "3 inputs -> 2 tanh units -> 3 outputs" in out
    code, out, err = run(capsys, "info", path, "--json")
    assert code == 0, err
    record = json.loads(out)  # strict JSON: json.loads accepts NaN, so check the text too
    assert "NaN" not in out and "Infinity" not in out
    assert record["diagnostics"] == {"training_mse": None, "times": {"total": None}}


# ---------------------------------------------------------------- demo

def test_demo_in_process(data, capsys):
    out_path = data["root"] / "demo.npz"
    code, out, err = run(capsys, "demo", "--n-samples", 4000, "--n-features", 6, "--n-hidden", 2, "-o", out_path)
    assert code == 0, err
    assert "planted sigmoid network: d=6, k=2, n=4000" in out
    assert "worst matched |cos(fitted a_j, planted a_j)|" in out
    assert TwoLayerNet.load(out_path).A1.shape == (6, 2)


def test_demo_refuses_bad_sizes(capsys):
    code, _, err = run(capsys, "demo", "--n-hidden", 0)
    assert_one_line_error(code, err, "n_hidden")


# ---------------------------------------------------------------- bad input

def bad_files(root):
    """Files that a command must refuse in one line."""
    files = {}
    files["missing"] = root / "missing.csv"
    write_csv(root / "bad-number.csv", ["a", "b", "y"], [[1, 2, 3], [4, "four", 6], [7, 8, 9]])
    write_csv(root / "empty-field.csv", ["a", "b", "y"], [[1, 2, 3], [4, "", 6], [7, 8, 9]])
    write_csv(root / "ragged.csv", ["a", "b", "y"], [[1, 2, 3], [4, 5], [7, 8, 9]])
    write_csv(root / "nan.csv", ["a", "b", "y"], [[1, 2, 3], [4, "nan", 6], [7, 8, 9]])
    write_csv(root / "header-only.csv", ["a", "b", "y"], [])
    (root / "empty.csv").write_text("")
    (root / "binary.csv").write_bytes(b"\xff\xfe\x00garbage\x80\x81")
    np.save(root / "nan.npy", np.array([[1.0, np.nan, 3.0], [4.0, 5.0, 6.0]]))
    np.save(root / "ok.npy", np.arange(12.0).reshape(4, 3))
    np.save(root / "text.npy", np.array([["a", "b"], ["c", "d"]]))
    np.save(root / "one-d.npy", np.arange(5.0))
    (root / "truncated.npy").write_bytes((root / "nan.npy").read_bytes()[:60])
    np.savez(root / "no-y.npz", X=np.ones((5, 2)))
    (root / "data.txt").write_text("1,2\n")
    return files


@pytest.fixture(scope="module")
def bad(data):
    root = data["root"] / "bad"
    root.mkdir()
    bad_files(root)
    model_bytes = data["model"].read_bytes()
    (root / "truncated-model.npz").write_bytes(model_bytes[: len(model_bytes) // 2])
    corrupted = bytearray(model_bytes)
    for i in range(200, len(corrupted), 97):
        corrupted[i] ^= 0x5A
    (root / "corrupted-model.npz").write_bytes(bytes(corrupted))
    (root / "random-model.npz").write_bytes(np.random.default_rng(0).bytes(3000))
    (root / "empty-model.npz").write_bytes(b"")
    np.savez(root / "foreign-model.npz", weights=np.ones(3))
    np.savez(root / "other-format-model.npz", header=np.array(json.dumps({"format": "someone.Else/7"})))
    np.save(root / "array-model.npy", np.ones(4))
    with zipfile.ZipFile(root / "pickle-model.npz", "w") as archive:  # an object array: needs pickle
        buffer = io.BytesIO()
        np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        archive.writestr("header.npy", buffer.getvalue())
    return root


FIT = ["fit", "-k", "2", "-o"]


@pytest.mark.parametrize("argv, fragments", [
    (["data/missing.csv", "--label-column", "y"], ["missing.csv", "No such file"]),
    (["data/bad-number.csv", "--label-column", "y"], ["bad-number.csv", "column 'b', line 3", "'four'"]),
    (["data/empty-field.csv", "--label-column", "y"], ["column 'b', line 3", "empty field"]),
    (["data/ragged.csv", "--label-column", "y"], ["line 3", "expected 3 fields", "got 2"]),
    (["data/nan.csv", "--label-column", "y"], ["column 'b', line 3", "finite", "'nan'"]),
    (["data/header-only.csv", "--label-column", "y"], ["at least one data row"]),
    (["data/empty.csv", "--label-column", "y"], ["header"]),
    (["data/binary.csv", "--label-column", "y"], ["UTF-8"]),
    (["data/bad-number.csv", "--label-column", "price"], ["no column named 'price'", "'a', 'b', 'y'"]),
    (["data/bad-number.csv"], ["--label-column"]),
    (["data/nan.npy", "--label-column", "-1"], ["nan.npy", "finite", "row 0, column 1"]),
    (["data/ok.npy", "--label-column", "3"], ["column index in [-3, 2]", "got 3"]),
    (["data/nan.npy"], ["--label-column INDEX"]),
    (["data/text.npy", "--label-column", "0"], ["numeric", "<U1"]),
    (["data/one-d.npy", "--label-column", "0"], ["2-D"]),
    (["data/truncated.npy", "--label-column", "0"], ["not a readable .npy file"]),
    (["data/no-y.npz"], ["no array named 'y'", "'X'"]),
    (["data/data.txt"], ["data.txt", ".npy, .npz, .csv, .parquet"]),
])
def test_fit_bad_data_one_line(bad, capsys, argv, fragments):
    argv = [arg.replace("data/", f"{bad}/") for arg in argv]
    code, out, err = run(capsys, *FIT, bad / "never.npz", *argv)
    assert_one_line_error(code, err, *fragments)
    assert out == ""
    assert not (bad / "never.npz").exists()


@pytest.mark.parametrize("source, option, fragments", [
    ("csv", ["-k", "0"], ["n_hidden", "got 0"]),
    ("csv", ["--alpha", "-1"], ["alpha", ">= 0", "-1"]),
    ("csv", ["--validation-fraction", "2", "--early-stopping"], ["validation_fraction", "got 2.0"]),
    ("csv", ["--max-iter", "-3"], ["max_iter", "got -3"]),
    ("csv", ["--n-rounds", "0"], ["n_rounds"]),
    ("csv", ["--blas-threads", "0"], ["blas_threads"]),
    ("csv", ["--threads", "0"], ["n_threads"]),
    ("X.npy", ["--labels", "SHORT"], ["--labels", f"expected {N} labels", "got 5"]),
    ("csv", ["--labels", "SHORT"], ["both"]),
])
def test_fit_bad_option_values_are_relayed(data, capsys, source, option, fragments):
    short = data["root"] / "y-short.npy"
    np.save(short, np.arange(5.0))
    argv = [data[source]] + (["--label-column", "target"] if source == "csv" else [])
    argv += ["-k", K, "-o", data["root"] / "never.npz"] + [short if arg == "SHORT" else arg for arg in option]
    code, _, err = run(capsys, "fit", *argv)
    assert_one_line_error(code, err, *fragments)


def test_fit_bad_labels(data, capsys):
    constant = data["root"] / "constant.csv"
    write_csv(constant, ["a", "b", "y"], [[i, i * i % 7, 1.0] for i in range(20)])
    code, _, err = run(capsys, "fit", constant, "--label-column", "y", "-k", 1, "-o", data["root"] / "never.npz")
    assert_one_line_error(code, err, "y: expected labels that vary")
    # Words are labels only for classification.
    code, _, err = run(capsys, "fit", data["class.csv"], "--label-column", "label", "-k", 1,
                       "-o", data["root"] / "never.npz")
    assert_one_line_error(code, err, "column 'label', line 2", "expected a number", "'high'")


def test_fit_unwritable_output(data, capsys):
    code, _, err = run(capsys, "fit", data["npz"], "-k", K, "-o", data["root"] / "no-such-dir" / "m.npz",
                       "--max-iter", 1)
    assert_one_line_error(code, err, "--output", "no such directory")


def test_parquet_without_its_engine_says_so(data, capsys):
    engine = importlib.util.find_spec("pyarrow") or importlib.util.find_spec("fastparquet")
    if importlib.util.find_spec("pandas") and engine:
        pytest.skip("pandas and a parquet engine are installed")
    path = data["root"] / "d.parquet"
    path.write_bytes(b"PAR1")
    code, _, err = run(capsys, *FIT, data["root"] / "never.npz", path, "--label-column", "y")
    assert_one_line_error(code, err, "d.parquet", "needs")


@pytest.mark.parametrize("name", ["truncated-model.npz", "corrupted-model.npz", "random-model.npz",
                                  "empty-model.npz", "foreign-model.npz", "other-format-model.npz",
                                  "array-model.npy", "pickle-model.npz", "missing-model.npz"])
@pytest.mark.parametrize("command", ["info", "predict"])
def test_bad_model_files_one_line(data, bad, capsys, name, command):
    argv = [command, bad / name] + ([data["X.npy"]] if command == "predict" else [])
    code, out, err = run(capsys, *argv)
    assert_one_line_error(code, err, name)
    assert out == ""


def test_user_activation_model_is_refused_in_one_line(data, capsys):
    """A network with a user activation needs its Activation object, which
    the command line cannot supply."""
    from fastten.activations import Activation, derivative

    path = data["root"] / "user.npz"
    mine = Activation("scaled_tanh", lambda t, order: 2.0 * derivative("tanh", t, order))
    TwoLayerNet(np.ones((D, 1)), np.zeros(1), np.ones(1), 0.0, mine).save(path)
    for argv in (["info", path], ["predict", path, data["X.npy"]]):
        code, out, err = run(capsys, *argv)
        assert_one_line_error(code, err, "user.npz", "scaled_tanh")
        assert out == ""


def test_predict_bad_inputs(data, bad, capsys):
    code, _, err = run(capsys, "predict", data["model"], data["npy"])  # the label column left in
    assert_one_line_error(code, err, f"expected {D} features", f"got {D + 1}")
    code, _, err = run(capsys, "predict", data["model"], bad / "nan.csv")
    assert_one_line_error(code, err, "finite")
    code, _, err = run(capsys, "predict", data["model"], data["X.npy"], "--proba")
    assert_one_line_error(code, err, "--proba", "regression")
    code, _, err = run(capsys, "predict", data["model"], data["X.npy"], "-o", data["root"] / "p.txt")
    assert_one_line_error(code, err, "p.txt", ".npy, .csv")
    code, _, err = run(capsys, "predict", data["model"], data["csv"], "--label-column", "nope")
    assert_one_line_error(code, err, "no column named 'nope'")


@pytest.mark.parametrize("argv", [
    [], ["frobnicate"], ["fit"], ["fit", "x.csv"], ["fit", "x.csv", "-k", "two", "-o", "m.npz"],
    ["fit", "x.csv", "-k", "2", "-o", "m.npz", "--activation", "swish"],
    ["fit", "x.csv", "-k", "2", "-o", "m.npz", "--alpha", "lots"], ["predict", "m.npz"],
    ["predict", "m.npz", "x.csv", "--proba", "--raw"], ["info"], ["info", "m.npz", "--yaml"],
    ["demo", "--quick", "--n-hidden", "1.5"], ["--no-such-flag", "demo"],
])
def test_usage_errors_exit_2(capsys, argv):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert "usage: fastten" in err and "Traceback" not in err


@pytest.mark.parametrize("command", [[], ["fit"], ["predict"], ["info"], ["demo"]])
def test_help_everywhere(capsys, command):
    code, out, err = run(capsys, *command, "--help")
    assert code == 0
    assert out.startswith("usage: fastten") and err == ""


def test_traceback_flag_lets_the_error_through(bad, capsys):
    with pytest.raises(OSError):
        main(["--traceback", "info", str(bad / "missing-model.npz")])


# ---------------------------------------------------------------- packaging and subprocess

def test_console_script_declared():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    with open(ROOT / "pyproject.toml", "rb") as fh:
        scripts = tomllib.load(fh)["project"]["scripts"]
    assert scripts == {"fastten": "fastten.cli:main"}


def test_importing_fastten_does_not_import_the_cli_or_pandas():
    code = "import sys, fastten; print('fastten.cli' in sys.modules, 'pandas' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["False", "False"], result.stderr


def python_m_fastten(*args, timeout):
    return subprocess.run([sys.executable, "-m", "fastten", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_python_m_fastten_help():
    result = python_m_fastten("--help", timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: fastten")
    for command in ("fit", "predict", "info", "demo"):
        assert command in result.stdout


def test_python_m_fastten_error_has_no_traceback(tmp_path):
    result = python_m_fastten("info", str(tmp_path / "nothing.npz"), timeout=120)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_python_m_fastten_demo_quick():
    result = python_m_fastten("demo", "--quick", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "worst matched |cos(fitted a_j, planted a_j)|" in result.stdout


@pytest.mark.slow
def test_python_m_fastten_demo_full_size():
    """The default demo (d=50, k=10, n=1e5); the issue asks for under a
    minute on a fresh install, compilation included (not timed here: the
    test machine is shared)."""
    result = python_m_fastten("demo", timeout=600)
    assert result.returncode == 0, result.stderr
    assert "planted sigmoid network: d=50, k=10, n=100000" in result.stdout


# ---------------------------------------------------------------- hypothesis

def valid_model_bytes():
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.npz")
        TwoLayerNet(rng.standard_normal((3, 2)), rng.standard_normal(2), rng.standard_normal(2), 0.5, "sigmoid",
                    {"times": {"total": 1.0}}).save(path)
        with open(path, "rb") as fh:
            return fh.read()


MODEL_BYTES = valid_model_bytes()

csv_field = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                      st.integers(-5, 5).map(str), st.sampled_from(["", "nan", "inf", "abc", " 1.5 ", '"2"', "1e400"]),
                      st.text(max_size=4))
csv_text = st.builds(
    lambda header, rows: "\n".join([",".join(header)] + [",".join(row) for row in rows]) + "\n",
    st.lists(st.sampled_from(["a", "b", "y", "c", ""]), min_size=0, max_size=4),
    st.lists(st.lists(csv_field, min_size=0, max_size=4), min_size=0, max_size=8))


@st.composite
def damaged_model(draw):
    data = bytearray(MODEL_BYTES)
    how = draw(st.sampled_from(["truncate", "flip", "both"]))
    if how in ("flip", "both"):
        for position in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=8)):
            data[position] ^= draw(st.integers(1, 255))
    if how in ("truncate", "both"):
        data = data[: draw(st.integers(0, len(data) - 1))]
    return bytes(data)


garbage = st.one_of(st.binary(max_size=300), csv_text.map(str.encode), damaged_model())


def check_never_raises(argv):
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except BaseException as exc:  # noqa: BLE001 (the property: nothing escapes main)
        pytest.fail(f"main({argv}) raised {type(exc).__name__}: {exc}")
    err = err.getvalue()
    event(f"exit code {code}")
    assert code in (0, 1, 2), (argv, code, err)
    assert "Traceback" not in err and "internal error" not in err, (argv, err)
    if code == 1:
        assert err.splitlines()[-1].startswith("fastten "), (argv, err)
        assert all(line.startswith("fastten ") for line in err.splitlines()), (argv, err)
    return code


@settings(max_examples=150)
@given(content=garbage, suffix=st.sampled_from([".npy", ".npz", ".csv", ".parquet"]),
       command=st.sampled_from(["fit", "predict-data", "predict-model", "info"]))
def test_garbage_files_never_raise(content, suffix, command):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "garbage" + suffix)
        with open(path, "wb") as fh:
            fh.write(content)
        model = os.path.join(tmp, "model.npz")
        with open(model, "wb") as fh:
            fh.write(MODEL_BYTES)
        argv = {"fit": ["fit", path, "--label-column", "y", "-k", "1", "-o", model, "--max-iter", "2"],
                "predict-data": ["predict", model, path],
                "predict-model": ["predict", path, path],
                "info": ["info", path, "--json"]}[command]
        check_never_raises(argv)


WORDS = ["fit", "predict", "info", "demo", "--help", "-k", "0", "1", "2", "-1", "x", "-o", "--label-column",
         "--labels", "--x-key", "--y-key", "--activation", "relu", "tanh", "--task", "classification",
         "--alpha", "-0.5", "nan", "inf", "--no-refine", "--proba", "--raw", "--json", "--random-state",
         "--max-iter", "--n-rounds", "--blas-threads", "none", "--delimiter", ";", "--no-header", "--init",
         "random", "--early-stopping", "--validation-fraction", "0.5", "--method", "power", "--bias-method",
         "fourier", "DATA", "MODEL", "MISSING", "OUT", "y"]


VALUES = st.sampled_from(["0", "1", "2", "-1", "0.5", "1e300", "nan", "-inf", "x", "", "none", "y", "a", "9"])
OPTIONS = {
    "fit": ["--label-column", "--labels", "--x-key", "--y-key", "--activation", "--task", "--input-model", "--init",
            "--method", "--bias-method", "--alpha", "--validation-fraction", "--n-iter-no-change", "--ridge",
            "--max-iter", "--n-rounds", "--random-state", "--blas-threads", "--threads", "--delimiter", "-k"],
    "predict": ["--label-column", "--x-key", "--delimiter", "-o"],
    "info": [],
}
FLAGS = {"fit": ["--no-refine", "--early-stopping", "--no-header"], "predict": ["--proba", "--raw", "--no-header"],
         "info": ["--json"]}


@st.composite
def command_lines(draw):
    """A command with its positional files and options of any value: mostly
    well-formed, so that the values (not the syntax) are what is fuzzed."""
    command = draw(st.sampled_from(["fit", "predict", "info"]))
    argv = [command] + {"fit": ["DATA", "-o", "OUT", "--max-iter", "3"], "predict": ["MODEL", "DATA"],
                        "info": ["MODEL"]}[command]
    for option in draw(st.lists(st.sampled_from(OPTIONS[command]), max_size=4)) if OPTIONS[command] else []:
        argv += [option, draw(st.one_of(VALUES, st.sampled_from(["DATA", "MODEL", "MISSING", "OUT"])))]
    argv += draw(st.lists(st.sampled_from(FLAGS[command]), max_size=2, unique=True))
    if command == "fit" and "-k" not in argv:
        argv += ["-k", "2"]
    if command == "fit" and "--label-column" not in argv and "--labels" not in argv:
        argv += ["--label-column", "y"]
    return argv


@settings(max_examples=150)
@given(words=st.one_of(st.lists(st.sampled_from(WORDS), max_size=12), command_lines()))
def test_argument_lists_never_raise(words):
    if "demo" in words and "--help" not in words:
        words = [word for word in words if word != "demo"]  # the default demo takes seconds; tested above
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        X = rng.standard_normal((40, 3))
        data_path = os.path.join(tmp, "data.csv")
        write_csv(data_path, ["a", "b", "c", "y"], np.column_stack([X, np.tanh(X @ [1.0, -1.0, 0.5])]).tolist())
        model_path = os.path.join(tmp, "model.npz")
        with open(model_path, "wb") as fh:
            fh.write(MODEL_BYTES)
        paths = {"DATA": data_path, "MODEL": model_path, "MISSING": os.path.join(tmp, "missing.npz"),
                 "OUT": os.path.join(tmp, "out.npz")}
        if "predict" in words:  # a model of the data's width, so that predictions can succeed
            model_path = paths["MODEL"] = os.path.join(tmp, "model3.npz")
            TwoLayerNet(np.eye(3)[:, :2], np.zeros(2), np.ones(2), 0.0, "tanh").save(model_path)
        check_never_raises([paths.get(word, word) for word in words])
