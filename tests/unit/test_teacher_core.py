"""The backend-independent parts of the teacher: prompt, demonstrations, label distribution, guided choice,
the SQLite store, and configs."""

import math
import sqlite3

import numpy as np
import pytest
from scipy.stats import entropy  # the reference the teacher's own entropy must match

from silverlabel.cache import AnnotationStore, Record, text_hash
from silverlabel.config import StudyConfig, TrainConfig
from silverlabel.errors import SilverlabelError
from silverlabel.teachers import Prompt, parse_teacher_uri, sample_demonstrations
from silverlabel.teachers.base import _entropy, check_distinguishable
from silverlabel.teachers.prompts import split_at_text
from silverlabel.teachers.trie import distribution, guided_choice, guided_steps, label_trie, unread_nodes, walk_steps


def _prompt(**kw):
    demos = sample_demonstrations(["great film", "awful", "fine", "boring"], [1, 0, 1, 0],
                                  ["negative", "positive"], k=3, seed=0)
    return Prompt(task="Classify the sentiment.", label_names=("negative", "positive"), demonstrations=demos, **kw)


def test_prompt_follows_the_paper_template():
    text = _prompt().render("what a movie")
    lines = text.splitlines()
    assert lines[0] == "### Instruction ###" and lines[1] == "Classify the sentiment."
    assert lines[2] == "Respond with only the label name, nothing else."
    assert lines[3:6] == ["### Available Labels ###", "negative", "positive"]
    assert lines[6] == "### Examples ###"
    assert sum(1 for ln in lines if ln.startswith("Text: ")) == 3
    assert "Text to classify: what a movie" in lines
    assert text.endswith("### Output ###\nLabel:")


def test_prefix_is_shared_and_the_space_goes_with_the_item():
    prompt = _prompt()
    full = prompt.render("\x00T\x00")
    prefix, item = split_at_text(full, "\x00T\x00")
    assert prefix.endswith("Text to classify:") and item.startswith(" {text}\n### Output ###")
    assert prefix + item.replace("{text}", "hello") == prompt.render("hello")


def test_demonstrations_are_fixed_by_their_seed():
    texts = [f"t{i}" for i in range(50)]
    labels = [i % 5 for i in range(50)]
    names = list("abcde")
    a = sample_demonstrations(texts, labels, names, k=3, seed=7)
    assert a == sample_demonstrations(texts, labels, names, k=3, seed=7)
    assert a.key() != sample_demonstrations(texts, labels, names, k=3, seed=8).key()
    bal = sample_demonstrations(texts, labels, names, k=5, seed=1, balanced=True)
    assert sorted(lab for _, lab in bal.examples) == names  # one per class


def test_prompt_key_changes_with_anything_that_changes_the_answer():
    base = _prompt()
    assert base.key() == _prompt().key()
    other_task = Prompt(task="Other.", label_names=base.label_names, demonstrations=base.demonstrations)
    assert other_task.key() != base.key()


@pytest.mark.parametrize("names, message", [
    (["a", "a"], "appears twice"), (["a", " "], "must not be empty"), (["a"], "at least 2 labels")])
def test_bad_label_sets(names, message):
    demos = sample_demonstrations(["x", "y"], [0, 0], ["a", "b"], k=1, seed=0)
    with pytest.raises(SilverlabelError, match=message):
        Prompt(task="t", label_names=tuple(names), demonstrations=demos)


def test_template_must_have_one_text_field():
    with pytest.raises(SilverlabelError, match=r"\{text\}"):
        _prompt(template="### Instruction ###\n{task}\n{labels}\n{demonstrations}\nno text here")


def test_distribution_normalises_sequence_probabilities():
    # label 0: one token p=0.5 then terminator p=0.5 -> 0.25; label 1: p=0.25 then terminator 1.0 -> 0.25
    lp = [[math.log(0.5), math.log(0.5)], [math.log(0.25), 0.0]]
    p = distribution(lp)
    assert np.allclose(p, [0.5, 0.5])
    assert _entropy(p) == pytest.approx(math.log(2))
    assert _entropy(np.array([1.0, 0.0])) == 0.0
    for q in ([0.7, 0.2, 0.1], [2.0, 1.0, 1.0], [0.5, 0.0, 0.5]):  # unnormalised input is normalised, as scipy does
        assert _entropy(np.array(q)) == pytest.approx(entropy(q), abs=1e-12)


def test_guided_choice_is_greedy_over_the_label_trie_not_the_sequence_argmax():
    # labels "hate speech" = [5, 6, T] and "hate" = [5, T] share their first token; "neither" = [9, T]
    tokens = [[5, 6, 99], [5, 99], [9, 99]]
    # first step: token 5 (p .6) beats 9 (p .4); then after 5: "speech" .3 vs terminator .7 -> "hate"
    lp = [[math.log(.6), math.log(.3), 0.0], [math.log(.6), math.log(.7)], [math.log(.4), 0.0]]
    assert guided_choice(tokens, lp) == 1
    assert int(np.argmax(distribution(lp))) == 1  # sequences: hate .42 > neither .40 > hate speech .18
    # where they disagree: token 5 wins the first step (.55) but splits its mass between two labels
    lp2 = [[math.log(.55), math.log(.5), 0.0], [math.log(.55), math.log(.5)], [math.log(.45), 0.0]]
    assert guided_choice(tokens, lp2) == 0  # greedy stays in the "hate..." branch; a tie goes to the first label
    assert int(np.argmax(distribution(lp2))) == 2  # while "neither" has the largest sequence probability


def test_guided_p_s_renormalises_each_step_over_the_labels_allowed_tokens():
    # "hate speech" = [5, 6, T], "hate" = [5, T], "neither" = [9, T]; raw probabilities of the trie's edges:
    # root: 5 -> .3, 9 -> .1 (the rest of the vocabulary .6); after 5: 6 -> .2, T -> .2; T after 5 6: .5;
    # T after 9: .9. Guided decoding samples 5 with .3/.4 = .75, then 6 or T with .5 each, then T for sure.
    tokens = [[5, 6, 99], [5, 99], [9, 99]]
    lp = [[math.log(.3), math.log(.2), math.log(.5)], [math.log(.3), math.log(.2)], [math.log(.1), math.log(.9)]]
    steps = guided_steps(tokens, lp)
    assert np.allclose(np.exp([sum(x) for x in steps]), [.375, .375, .25])
    assert np.allclose(distribution(steps), [.375, .375, .25])
    # the sequence probability differs: .03, .06, .09 renormalised
    assert np.allclose(distribution(lp), [1 / 6, 2 / 6, 3 / 6])
    # a step with one allowed token counts 0 whatever was read there, so backends may leave it unread
    unread = [[math.log(.3), math.log(.2), 0.0], [math.log(.3), math.log(.2)], [math.log(.1), 0.0]]
    assert np.allclose(np.concatenate(guided_steps(tokens, unread)), np.concatenate(steps))
    # the greedy label is the same under both: renormalising a step does not change its best token
    assert guided_choice(tokens, steps) == guided_choice(tokens, lp)


def test_a_guided_walk_reads_only_the_branching_nodes():
    tokens = [[5, 6, 99], [5, 99], [9, 99]]
    trie = label_trie(tokens)
    branching = {(), (5,)}
    assert {n for n, kids in trie.items() if len(kids) > 1} == branching
    # the first walk from the root takes 9 (the greedy path): (5,) is left, and nothing below 9 is needed
    assert unread_nodes(trie, {(), (9,)}, branching) == [(5,)]
    assert unread_nodes(trie, {(), (5,)}, branching) == []
    assert walk_steps(branching, [()]) == 2 and walk_steps({()}, [()]) == 1
    # every node needed (the sequence probability): a node is a start once its parent is read
    assert unread_nodes(trie, {(), (9,)}) == [(5,)]
    assert unread_nodes(trie, {()}) == [(5,), (9,)]
    assert walk_steps(set(trie), [()]) == 3 and walk_steps(set(trie), [(5,), (9,)]) == 2


def test_the_p_s_kind_is_checked_and_keys_the_cache():
    from silverlabel.teachers import TEACHER_OPTIONS, Teacher, validate_options

    class Plain(Teacher):  # nothing loaded: only the base class's keys are under test
        model_id = "m"

        def prepare(self, prompt):
            pass

        def score(self, texts):
            return []

    seq, guided = Plain("m"), Plain("m", p_s="guided")
    prompt = _prompt()
    assert seq.cache_key(prompt) != guided.cache_key(prompt)
    assert "p_s" not in seq.cache_key(prompt)  # the default keeps the keys of records stored before p_s existed
    with pytest.raises(SilverlabelError, match="p_s 'exact' is unknown; choose one of sequence, guided"):
        Plain("m", p_s="exact")
    for backend, model in TEACHER_OPTIONS.items():  # every backend takes it from a study's [teachers.options]
        if model is not None:
            assert validate_options(backend, {"p_s": "guided"}) == {"p_s": "guided"}
            with pytest.raises(SilverlabelError, match="p_s"):
                validate_options(backend, {"p_s": "exact"})


def test_indistinguishable_labels_are_refused():
    with pytest.raises(SilverlabelError, match="tokenise identically"):
        check_distinguishable(["Yes", "yes "], [[1, 2], [1, 2]])


def test_store_roundtrip_resume_and_keys(tmp_path):
    path = tmp_path / "a.sqlite"
    with AnnotationStore(path) as store:
        good = Record(text_hash("x"), "pos", [0.2, 0.8], 0.5, 40, 0.1)
        bad = Record(text_hash("y"), None, None, None, 40, 0.1, error="timeout")
        store.put_many("m1", "p1", [good, bad])
    with AnnotationStore(path) as store:  # reopened, as after a crash
        got = store.get_many("m1", "p1", [text_hash("x"), text_hash("y")])
        assert list(got) == [text_hash("x")]  # failures are not returned, so they are retried
        assert got[text_hash("x")].probs == [0.2, 0.8]
        assert store.get_many("m2", "p1", [text_hash("x")]) == {}  # another model is another key
        assert store.get_many("m1", "p2", [text_hash("x")]) == {}  # another prompt too
        assert store.count() == 1
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_store_refuses_a_file_that_is_not_sqlite(tmp_path):
    path = tmp_path / "a.sqlite"
    path.write_text("not a database at all" * 100)
    with pytest.raises(SilverlabelError, match="not a usable annotation store"):
        AnnotationStore(path)


def test_configs_refuse_unknown_keys_and_bad_values():
    with pytest.raises(SilverlabelError, match="unknown key 'epocs'"):
        TrainConfig.from_dict({"epocs": 3})
    with pytest.raises(SilverlabelError, match="seeds"):
        StudyConfig.from_dict({"datasets": [{"source": "imdb"}], "seeds": [-1]})
    cfg = TrainConfig(model="minilm", epochs=2)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("uri, message", [("qwen", "not BACKEND:MODEL"), ("gpt:x", "backend 'gpt' is unknown")])
def test_teacher_uri_errors(uri, message):
    with pytest.raises(SilverlabelError, match=message):
        parse_teacher_uri(uri)
