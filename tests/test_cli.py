"""The `distillad` command as a user runs it: train -> test -> predict, bench, overwrite
protection, resume, clear errors, and the demo end to end."""
import json

import numpy as np
import pytest

from distillad.cli import main, parse_params

from helpers import write_mvtec

TEACHER = '--param=teacher={"name": "test_cnn_tiny", "weights": "random"}'
KNN = ["--model", "knn", TEACHER, "--param", "layers=[2,3]", "--param", "image_size=64"]


@pytest.fixture
def data(tmp_path):
    return f"mvtec:{write_mvtec(tmp_path / 'cat')}"


def test_train_test_predict_roundtrip(tmp_path, data, capsys):
    run = tmp_path / "run"
    assert main(["train", *KNN, "--data", data, "--out", str(run), "--quiet"]) == 0
    assert (run / "model" / "config.json").exists()
    assert main(["test", str(run), "--data", data, "--no-speed", "--quiet"]) == 0
    m = json.loads((run / "eval" / "metrics.json").read_text())
    assert m["metrics"]["image_auroc"] == 1.0
    assert (run / "eval" / "report.html").exists()
    imgs = sorted(str(p) for p in (tmp_path / "cat" / "test" / "square").glob("*.png"))
    assert main(["predict", str(run), *imgs, "--out", str(tmp_path / "pred")]) == 0
    preds = json.loads((tmp_path / "pred" / "predictions.json").read_text())["predictions"]
    assert len(preds) == 3 and all(p["anomalous"] for p in preds)
    amap = np.load(tmp_path / "pred" / "000_map.npy")
    assert amap.shape == (64, 64)
    assert (tmp_path / "pred" / "000_overlay.png").exists()


def test_existing_run_is_never_overwritten_without_flag(tmp_path, data):
    run = tmp_path / "run"
    main(["train", *KNN, "--data", data, "--out", str(run), "--quiet"])
    before = (run / "model" / "weights.safetensors").read_bytes()
    with pytest.raises(SystemExit, match="exists and is not empty; pass --overwrite"):
        main(["train", *KNN, "--data", data, "--out", str(run), "--quiet"])
    assert (run / "model" / "weights.safetensors").read_bytes() == before
    assert main(["train", *KNN, "--data", data, "--out", str(run), "--quiet", "--overwrite"]) == 0


def test_bench_puts_models_side_by_side(tmp_path, data, capsys):
    out = tmp_path / "bench"
    assert main(["bench", "--models", "knn", TEACHER, "--param", "knn.layers=[2,3]", "--param", "image_size=64",
                 "--data", data, "--out", str(out), "--quiet", "--no-report"]) == 0
    table = (out / "bench.md").read_text()
    header, _, row = table.splitlines()[2:5]
    assert "image_auroc" in header and "ms/img" in header
    assert row.startswith("| knn |") and "1.0000" in row
    res = json.loads((out / "bench.json").read_text())["results"]
    assert res[0]["metrics"]["image_auroc"] == 1.0
    assert "ms" in capsys.readouterr().out


def test_bench_compares_two_configurations_of_one_model(tmp_path, data):
    """`knn@one` is knn again under another label with its own parameters; --save-models keeps
    every trained model, and a saved model loads back with the settings its label gave it."""
    from distillad import load

    out = tmp_path / "bench"
    assert main(["bench", "--models", "knn,knn@one", TEACHER, "--param", "knn.layers=[2,3]",
                 "--param", "knn@one.layers=[3]", "--param", "image_size=64", "--save-models",
                 "--data", data, "--out", str(out), "--quiet", "--no-report", "--no-speed"]) == 0
    rows = [r for r in (out / "bench.md").read_text().splitlines() if r.startswith("| knn")]
    assert [r.split("|")[1].strip() for r in rows] == ["knn", "knn@one"]
    assert list(load(out / "knn" / "model").layers) == [2, 3]
    assert list(load(out / "knn@one" / "model").layers) == [3]
    with pytest.raises(SystemExit, match="names an entry twice"):
        main(["bench", "--models", "knn,knn", "--data", data, "--out", str(tmp_path / "b2"), "--quiet"])


def test_bad_data_spec_is_a_clear_error(tmp_path, capsys):
    rc = main(["train", *KNN, "--data", f"mvtec:{tmp_path / 'missing'}", "--out", str(tmp_path / "r"), "--quiet"])
    assert rc == 2
    assert "missing" in capsys.readouterr().err


def test_loading_a_broken_run_is_a_clear_error(tmp_path, data, capsys):
    (tmp_path / "run" / "model").mkdir(parents=True)
    (tmp_path / "run" / "model" / "config.json").write_text("{not json")
    assert main(["test", str(tmp_path / "run"), "--data", data, "--quiet"]) == 2
    assert "config.json: not valid JSON" in capsys.readouterr().err


def test_param_parsing():
    p = parse_params(["lr=0.001", "knn.layers=[2,3]", "l2bt.teacher=dinov2_vits14"], ["knn", "l2bt"])
    assert p == {"knn": {"lr": 0.001, "layers": [2, 3]}, "l2bt": {"lr": 0.001, "teacher": "dinov2_vits14"}}
    with pytest.raises(SystemExit, match="expected key=value"):
        parse_params(["oops"], ["knn"])
    # a parameter for a model that is not run is ignored, never passed to another model
    assert parse_params(["knn.image_size=112"], ["l2bt"]) == {"l2bt": {}}
    with pytest.raises(SystemExit, match="unknown model 'nope'"):
        parse_params(["nope.x=1"], ["knn"])
    # model.key reaches every labelled entry of the model; model@label.key only that one, and wins
    p = parse_params(["onen.supervision=none", "onen@b.supervision=boxes", "onen.epochs=3"], ["onen", "onen@b"])
    assert p == {"onen": {"supervision": "none", "epochs": 3}, "onen@b": {"supervision": "boxes", "epochs": 3}}


@pytest.mark.slow
def test_demo_runs_end_to_end_offline(tmp_path, capsys):
    """The README's first command: embedded data, offline weights, a report."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["metrics"]["image_auroc"] > 0.9
    assert m["metrics"]["pixel_auroc"] > 0.9
    assert (out / "report.html").stat().st_size > 10_000
    assert "report:" in capsys.readouterr().out
