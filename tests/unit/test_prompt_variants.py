"""Teacher configurations from instruction variants and k_shot lists: names, prompts, label sources, the files
instructions are read from, and run ids of teachers written before variants existed."""

from types import SimpleNamespace

import numpy as np
import pytest

from silverlabel.config import StudyConfig, load_study_config
from silverlabel.errors import SilverlabelError
from silverlabel.study.grid import label_sources, teacher_needs
from silverlabel.study.labels import prompt_for

BASE = {"datasets": [{"source": "toxic"}], "label_sources": ["gold"]}


def config(**teacher):
    return StudyConfig.from_dict({**BASE, "teachers": [{"name": "q", "uri": "llamacpp:qwen2.5-0.5b", **teacher}]})


def test_variants_are_named_and_the_first_keeps_the_teachers_name():
    c = config(instructions={"paper": "{task}", "plain": "Is it hateful?"}, k_shot=[3, 0], demo_seeds=[0, 1])
    specs = c.teacher_specs()
    assert list(specs) == ["q", "q/paper/k0", "q/plain/k3", "q/plain/k0"]
    assert [(s.instruction, s.k_shot) for s in specs.values()] == [("{task}", 3), ("{task}", 0),
                                                                    ("Is it hateful?", 3), ("Is it hateful?", 0)]
    assert all(s.instructions == {} and s.demo_seeds == [0, 1] for s in specs.values())
    assert [v for v, _ in c.teachers[0].variants()] == ["paper", "paper", "plain", "plain"]


def test_a_variant_is_a_label_source_and_hypotheses_need_every_configuration():
    c = StudyConfig.from_dict({**BASE, "label_sources": ["gold", "teacher", "teacher:q/plain"],
                               "teachers": [{"name": "q", "uri": "llamacpp:qwen2.5-0.5b", "demo_seeds": [0, 1],
                                             "instructions": {"paper": "{task}", "plain": "Is it hateful?"}}]})
    assert [s.name for s in label_sources(c)] == ["gold", "teacher:q", "teacher:q/plain"]  # "teacher": main only
    assert teacher_needs(c) == {"q": {0}, "q/plain": {0}}
    h = c.model_copy(update={"hypotheses": [StudyConfig.from_dict({
        **BASE, "teachers": [{"name": "q", "uri": "llamacpp:x"}],
        "hypotheses": [{"name": "h", "target_class": "hate speech", "threshold": 0.1}]}).hypotheses[0]]})
    assert teacher_needs(h) == {"q": {0, 1}, "q/plain": {0, 1}}
    with pytest.raises(SilverlabelError, match="names no teacher configuration"):
        StudyConfig.from_dict({**BASE, "label_sources": ["teacher:q/formal"],
                               "teachers": [{"name": "q", "uri": "llamacpp:x", "instructions": {"a": "x"}}]})


def test_the_prompt_uses_the_instruction_with_the_task_in_it():
    prep = SimpleNamespace(splits=SimpleNamespace(train=SimpleNamespace(
        texts=["a", "b", "c", "d"], labels=np.array([0, 1, 0, 1]), label_names=["no", "yes"], task="Is it X?")))
    c = config(instructions={"paper": "{task}", "plain": "Answer: {task} Think first."}, k_shot=2)
    main, plain = c.teacher_specs().values()
    p_main, p_plain = prompt_for(prep, main, 0), prompt_for(prep, plain, 0)
    assert p_main.task == "Is it X?" and p_plain.task == "Answer: Is it X? Think first."
    assert p_main.key() != p_plain.key()  # the cache key includes the prompt: labelled once each
    assert p_main.demonstrations == p_plain.demonstrations
    assert prompt_for(prep, config().teacher_specs()["q"], 0).task == "Is it X?"


def test_run_ids_of_a_teacher_without_variants_are_unchanged():
    """The recipe that keys a teacher's runs is its recorded config less its name and the unset prompt options,
    i.e. exactly what it was before prompt variants existed."""
    t = config().teachers[0]
    legacy = {k: v for k, v in t.to_dict().items() if k not in ("name", "instruction", "instructions")}
    assert t.recipe() == legacy
    assert config(instruction="Say X.").teachers[0].recipe()["instruction"] == "Say X."


def test_instruction_files_are_read_relative_to_the_config(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "formal.txt").write_text("Classify formally.\n")
    (tmp_path / "p" / "empty.txt").write_text("\n")
    body = ('label_sources = ["gold"]\n[[datasets]]\nsource = "toxic"\n[[teachers]]\nname = "q"\n'
            'uri = "llamacpp:qwen2.5-0.5b"\n[teachers.instructions]\npaper = "{task}"\nformal = "@p/%s"\n')
    (tmp_path / "ok.toml").write_text(body % "formal.txt")
    c = load_study_config(tmp_path / "ok.toml")
    assert c.teacher_specs()["q/formal"].instruction == "Classify formally."
    for name, expect in (("missing.txt", "prompt file '.*missing.txt' does not exist"), ("empty.txt", "prompt file .*empty.txt. is empty")):
        (tmp_path / "bad.toml").write_text(body % name)
        with pytest.raises(SilverlabelError, match=f"bad.toml: .*instructions.formal: {expect}"):
            load_study_config(tmp_path / "bad.toml")


def test_bad_variants_are_one_line_errors():
    with pytest.raises(SilverlabelError, match="give instruction or instructions"):
        config(instruction="x", instructions={"a": "y"})
    with pytest.raises(SilverlabelError, match="k_shot must be"):
        config(k_shot=[3, 3])
    with pytest.raises(SilverlabelError, match="without '/'"):
        config(instructions={"a/b": "y"})
    with pytest.raises(SilverlabelError, match="two teacher configurations are called 'q/plain'"):
        StudyConfig.from_dict({**BASE, "teachers": [
            {"name": "q", "uri": "llamacpp:x", "instructions": {"paper": "{task}", "plain": "y"}},
            {"name": "q/plain", "uri": "llamacpp:x"}]})
