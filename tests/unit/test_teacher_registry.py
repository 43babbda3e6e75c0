"""The teacher registry is the only way code finds a backend: a third-party backend registered with its options
model works through ``get_teacher`` and in a study config, and every backend's options are validated by the
model it registered (unknown keys and bad values are errors naming the option)."""

import numpy as np
import pytest
from pydantic import Field

import silverlabel
from silverlabel.config import StudyConfig
from silverlabel.errors import SilverlabelError
from silverlabel.teachers import (
    TEACHER_OPTIONS,
    TEACHERS,
    Demonstrations,
    Prompt,
    Scored,
    TeacherOptions,
    get_teacher,
)
from tests.fault_server import sequence_logprob, token_logprob


class ToyOptions(TeacherOptions):
    temperature: float = Field(1.0, gt=0)


class ToyTeacher(silverlabel.Teacher):
    """A backend as a third party would write one: the fault server's character-level toy model (every
    log-probability known in closed form), with one option."""

    backend = "toy-plugin"

    def __init__(self, model: str, *, chat: bool = True, temperature: float = 1.0):
        super().__init__(model, chat=chat)
        self.temperature = temperature

    @property
    def model_id(self) -> str:
        return f"toy:{self.model}@t{self.temperature}"

    def prepare(self, prompt):
        self.prompt = prompt
        self.label_tokens = [[ord(c) for c in " " + n] for n in prompt.label_names]

    def score(self, texts):
        out = []
        for text in texts:
            context = self.prompt.render(text)
            per_label = []
            for toks in self.label_tokens:
                answer = "".join(map(chr, toks))
                per_label.append([sequence_logprob(context + answer[:i], answer[i]) / self.temperature
                                  for i in range(len(answer))])
            out.append(Scored(token_logprobs=per_label, prompt_tokens=len(context)))
        return out


@pytest.fixture
def toy():
    silverlabel.register_teacher(ToyTeacher, options=ToyOptions)
    yield
    TEACHERS.pop("toy-plugin", None)
    TEACHER_OPTIONS.pop("toy-plugin", None)


def _expected(prompt, text, temperature):
    """P_S computed here from the toy model's closed form: softmax over labels of log P(answer)/T."""
    context = prompt.render(text)
    seq = np.array([sequence_logprob(context, " " + n) / temperature for n in prompt.label_names])
    e = np.exp(seq - seq.max())
    return e / e.sum()


def test_a_registered_third_party_backend_works_in_get_teacher(toy):
    from silverlabel.teachers import Prompt, sample_demonstrations

    texts = ["good film", "awful, boring", "fine I guess"]
    demos = sample_demonstrations(texts, np.array([0, 1, 0]), ["positive", "negative"], k=2, seed=0)
    prompt = Prompt(task="Sentiment.", label_names=("positive", "negative"), demonstrations=demos)
    teacher = get_teacher("toy-plugin:m", temperature=0.5)
    assert isinstance(teacher, ToyTeacher) and teacher.temperature == 0.5
    ann = teacher.annotate(range(3), texts, prompt)
    want = np.array([_expected(prompt, t, 0.5) for t in texts])
    assert np.allclose(ann.probs(), want, atol=1e-12)
    # guided decoding: both answers start with " ", so the greedy choice is the better second character
    greedy = [max(prompt.label_names, key=lambda n: token_logprob(prompt.render(t) + " ", n[0])) for t in texts]
    assert ann.frame["label"].tolist() == greedy
    with pytest.raises(SilverlabelError, match="temperature: Input should be greater than 0"):
        get_teacher("toy-plugin:m", temperature=0)
    with pytest.raises(SilverlabelError, match="temprature: Extra inputs are not permitted"):
        get_teacher("toy-plugin:m", temprature=2)


def test_a_third_party_backend_in_a_study_config_annotates_with_its_options(toy, tmp_path):
    from silverlabel import study

    config = StudyConfig.from_dict({
        "datasets": [{"source": "toxic", "n_train": 12, "n_test": 6}],
        "teachers": [{"name": "toy", "uri": "toy-plugin:m", "k_shot": 1, "options": {"temperature": 2.0}}]})
    spec = config.teachers[0]
    assert spec.options == {"temperature": 2.0}
    prep = study.prepare_dataset(config.datasets[0], sizes=config.sizes, offline=True)
    from silverlabel.cache import AnnotationStore

    store = AnnotationStore(tmp_path / "a.sqlite")
    try:
        frame = study.annotate(prep, spec, 0, store)
    finally:
        store.close()
    prompt = study.prompt_for(prep, spec, 0)
    texts = frame["text"].tolist()
    want = np.array([_expected(prompt, t, 2.0) for t in texts])
    assert np.allclose(frame[[f"p:{n}" for n in prompt.label_names]].to_numpy(), want, atol=1e-12)
    assert frame["model"].eq("m").all() and len(frame) == len(prep.splits.train.texts) + len(
        prep.splits.validation.texts)
    with pytest.raises(SilverlabelError, match=r"teachers\.0.*temperature: Input should be greater than 0"):
        StudyConfig.from_dict({"datasets": [{"source": "toxic"}], "teachers": [
            {"name": "toy", "uri": "toy-plugin:m", "options": {"temperature": -1}}]})


@pytest.mark.parametrize("uri,options,message", [
    ("openai:http://127.0.0.1:1/v1#m", {"scoring": "fast"}, "scoring: Input should be 'auto', 'token_ids'"),
    ("openai:http://127.0.0.1:1/v1#m", {"concurrency": 0}, "concurrency: Input should be greater than or equal to 1"),
    ("llamacpp:smollm2-135m", {"n_thread": 2}, "n_thread: Extra inputs are not permitted"),
    ("hf:smollm2-135m", {"dtype": "float8"}, "dtype: Input should be 'auto', 'float32', 'float16' or 'bfloat16'"),
    ("vllm:Qwen/Qwen2.5-0.5B-Instruct", {"guided": "server"}, "guided: Input should be 'engine' or 'local'"),
    ("vllm:Qwen/Qwen2.5-0.5B-Instruct", {"block_size": 32}, "block_size: Extra inputs are not permitted"),
])
def test_built_in_backends_validate_their_options(uri, options, message):
    with pytest.raises(SilverlabelError, match=message):
        get_teacher(uri, **options)
    with pytest.raises(SilverlabelError, match=message):
        StudyConfig.from_dict({"datasets": [{"source": "toxic"}], "teachers": [
            {"name": "t", "uri": uri, "options": options}]})


def test_options_reach_the_backend():
    t = get_teacher("openai:http://127.0.0.1:1/v1#m", concurrency=3, timeout=5, scoring="echo",
                    chat_template_kwargs={"enable_thinking": False})
    assert (t.concurrency, t.timeout, t.scoring, t.chat_template_kwargs) == (3, 5.0, "echo",
                                                                             {"enable_thinking": False})


def test_the_vllm_backend_takes_its_options_and_says_what_it_cannot_load():
    t = get_teacher("vllm:Qwen/Qwen2.5-0.5B-Instruct", guided="local", max_model_len=1024,
                    engine={"block_size": 32})
    assert (t.guided, t.max_length, t.engine_options["block_size"]) == ("local", 1024, 32)
    prompt = Prompt(task="t", label_names=("a", "b"), demonstrations=Demonstrations(0, ()))
    assert t.cache_key(prompt).endswith(":chat")  # guided locally: the plain key
    with pytest.raises(SilverlabelError, match="vLLM takes a hub name or an HF model folder, not a .gguf file"):
        get_teacher("vllm:smollm2-135m")
    pytest.importorskip("transformers")
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(SilverlabelError, match="needs vLLM in this environment: pip install vllm"):
            t.prepare(prompt)


def test_no_hard_coded_backend_map():
    from silverlabel import teachers

    assert not hasattr(teachers, "_BACKEND_MODULES")
    assert set(TEACHERS) >= {"llamacpp", "hf", "openai"} and set(TEACHER_OPTIONS) >= set(TEACHERS)
    with pytest.raises(SilverlabelError, match="backend 'nope' is unknown; choose one of anthropic, chat, hf, llamacpp, openai"):
        get_teacher("nope:x")
