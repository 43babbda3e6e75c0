"""The shipped configs as a user meets them offline: every dry run prints its plan and exits 0, marking the cells
that cannot run and why; `study run` refuses such a grid before any work, naming the dataset, its size and what
to change; paper.toml is the paper's grid (Tables 1 and 2) and its rehearsal keeps that shape and can run."""

import pytest

from silverlabel.config import SHIPPED_CONFIGS, StudyConfig, load_study_config
from silverlabel.errors import SilverlabelError
from silverlabel.rehearsal import rehearsal_config
from silverlabel.study import dry_run, label_sources, run_study

SHIPPED = sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.toml"))


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_plans_offline_and_marks_what_cannot_run(name, tmp_path):
    config = load_study_config(name)
    plan = dry_run(config, tmp_path / "out", offline=True)
    n_sources = len(label_sources(config))
    sizes = len(config.sizes or [None])
    assert len(plan.cells) == len(config.datasets) * n_sources * len(config.students) * sizes * len(config.seeds)
    if name.startswith("paper"):  # the Manifestos stand-in (1122 debate statements) cannot hold a 2000-item test split
        assert list(plan.blocked) == ["manifestos"]
        assert "offline stand-in, 1122 items" in plan.blocked["manifestos"]
        assert "n_test" in plan.blocked["manifestos"] and "MANIFESTO_API_KEY" in plan.blocked["manifestos"]
        assert plan.runnable == len(plan.cells) * 3 // 4
        with pytest.raises(SilverlabelError, match=r"cannot run 1 of its 4 datasets \(nothing was run\).*1122 items"):
            run_study(config, tmp_path / "out", offline=True)
    else:
        assert plan.blocked == {} and plan.runnable == len(plan.cells)
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


def test_paper_toml_is_the_papers_grid():
    config = load_study_config("paper")
    assert [d.source for d in config.datasets] == ["imdb", "ecommerce", "manifestos", "toxic"]
    assert all((d.n_train, d.n_test) == (5000, 2000) for d in config.datasets)
    assert config.seeds == [1, 2, 3, 4, 5] and [t.name for t in config.teachers] == ["qwen3b", "qwen7b"]
    assert [t.uri.rsplit("#", 1)[1] for t in config.teachers] == ["Qwen/Qwen2.5-3B-Instruct", "Qwen/Qwen2.5-7B-Instruct"]
    student = config.students[0]
    assert (student.model, student.epochs, student.learning_rate, student.batch_size, student.weight_decay,
            student.warmup_ratio) == ("roberta-base", 3, 2e-5, 16, 0.01, 0.05)
    assert [s.name for s in label_sources(config)] == [
        "gold", "teacher:qwen3b", "teacher:qwen7b", "entropy@5%:qwen7b", "entropy@25%:qwen7b",
        "ensemble[fill=none]@100%:qwen7b"]
    assert config.teachers[1].demo_seeds == [0, 1, 2, 3, 4]
    scaling = load_study_config("paper-scaling")
    assert scaling.sizes == list(range(1000, 5001, 250))


def test_paper_dry_run_from_the_cli_exits_0_and_study_run_refuses_before_any_work(tmp_path, cli):
    dry = cli("study", "run", "paper", "--out", str(tmp_path / "out"), "--dry-run")
    assert dry.returncode == 0, dry.stderr[-2000:]
    text = " ".join(dry.stdout.split())
    assert "study paper: 120 runs, 0 done, 30 cannot run" in text
    assert "work left: 90 student runs" in text and "99000 items to annotate" in text
    assert "cannot run: [[datasets]] 'manifestos' (offline stand-in, 1122 items)" in text
    run = cli("study", "run", "paper", "--out", str(tmp_path / "out"))
    assert run.returncode == 2
    err = " ".join(run.stderr.split())
    assert "study 'paper' cannot run 1 of its 4 datasets (nothing was run)" in err
    assert "'manifestos' (offline stand-in, 1122 items)" in err and "below 1116" in err
    assert not (tmp_path / "out").exists()


def test_a_too_small_dataset_is_marked_in_the_dry_run_and_refused_by_run(tmp_path, cli):
    data = tmp_path / "tiny.csv"
    data.write_text("text,label\n" + "".join(f"text number {i},{'ab'[i % 2]}\n" for i in range(30)))
    config = tmp_path / "small.toml"
    config.write_text(f'name = "small"\nseeds = [1, 2]\nlabel_sources = ["gold"]\n'
                      f'[[datasets]]\nsource = "{data}"\nname = "tiny"\nn_train = 20\nn_test = 40\n'
                      f'[[datasets]]\nsource = "toxic"\nn_train = 20\nn_test = 20\n'
                      f'[[students]]\nname = "minilm"\nmodel = "minilm"\n')
    dry = cli("study", "run", str(config), "--out", str(tmp_path / "out"), "--dry-run")
    assert dry.returncode == 0, dry.stderr[-2000:]
    text = " ".join(dry.stdout.split())
    assert "study small: 4 runs, 0 done, 2 cannot run" in text
    assert ("cannot run: [[datasets]] 'tiny' (real data, 30 items): a test split of 40 leaves too little of the "
            "30 items for training") in text
    assert "work left: 2 student runs" in text
    run = cli("study", "run", str(config), "--out", str(tmp_path / "out"))
    assert run.returncode == 2 and "'tiny' (real data, 30 items)" in run.stderr and "below 26" in run.stderr
    assert not (tmp_path / "out").exists()


def test_the_rehearsal_keeps_the_grid_shape_and_can_run_offline(tmp_path, cli):
    paper = load_study_config("paper")
    rehearsal = rehearsal_config(paper)
    assert [d.key for d in rehearsal.datasets] == [d.key for d in paper.datasets]
    assert [s.name for s in label_sources(rehearsal)] == [s.name for s in label_sources(paper)]
    assert [t.uri for t in rehearsal.teachers] == ["llamacpp:smollm2-135m", "llamacpp:qwen2.5-0.5b"]
    assert [t.demo_seeds for t in rehearsal.teachers] == [t.demo_seeds for t in paper.teachers]
    assert rehearsal.mitigations == paper.mitigations
    assert rehearsal.students[0].name == "roberta-base" and rehearsal.students[0].model == "minilm"
    assert rehearsal.students[0].epochs == 3 and rehearsal.seeds == [1, 2, 3] and rehearsal.sizes == [20, 40]
    plan = dry_run(rehearsal, tmp_path / "out", offline=True)
    assert plan.blocked == {} and len(plan.cells) == 4 * 6 * 3 * 2
    assert sum(plan.annotate_items.values()) == 4 * 6 * (40 + 4)  # 3B once, 7B five times; train + validation
    dry = cli("study", "run", "paper-scaling", "--rehearse", "--out", str(tmp_path / "out"), "--dry-run")
    assert dry.returncode == 0 and "cannot run" not in dry.stdout


def test_the_rehearsal_drops_server_options_the_local_teachers_do_not_take():
    """A paper-scale teacher on a server has server options (README: concurrency); the rehearsal's llama.cpp
    teachers validate their own options, so the server's are dropped, not refused."""
    paper = load_study_config("paper").to_dict()
    for t in paper["teachers"]:
        t["options"] = {"concurrency": 16, "timeout": 120}
    rehearsal = rehearsal_config(StudyConfig.from_dict(paper))
    assert all(t.uri.startswith("llamacpp:") and t.options == {} for t in rehearsal.teachers)
