"""The Manifesto Project's coded quasi-sentences: a local download in the two real formats (the website's
per-document CSV, manifestoR's corpus export), the API served by a real HTTP server on 127.0.0.1 in the API's
JSON format, the RILE classes and the temporal split, all against counts written down by hand from the rows."""

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import numpy as np
import pytest

from silverlabel.data import load_preset
from silverlabel.errors import SilverlabelError
from silverlabel.manifesto import fetch_api, read_download, rile_class
from silverlabel.splits import split

# What manifestoR writes with write.csv(as.data.frame(corpus, with.meta = TRUE)): R's row names first, then
# text, cmp_code, eu_code, pos and the document metadata (a subset of its columns here; the rest are ignored).
MANIFESTOR_EXPORT = '''"","text","cmp_code","eu_code","pos","manifesto_id","party","date","language","annotations","handbook","title"
"1","Our Platform","H",NA,1,"61320_201211",61320,201211,"english",TRUE,"4","Moving America Forward"
"2","We will raise the minimum wage.","504",NA,2,"61320_201211",61320,201211,"english",TRUE,"4","Moving America Forward"
"3","Workers deserve the right to organize.","701",NA,3,"61320_201211",61320,201211,"english",TRUE,"4","Moving America Forward"
"4","We will lower taxes on small businesses.","402",NA,4,"61620_201211",61620,201211,"english",TRUE,"4","We Believe in America"
"5","The family is the foundation of society.","603",NA,5,"61620_201211",61620,201211,"english",TRUE,"4","We Believe in America"
"6","We will invest in clean energy.","501",NA,6,"61320_201611",61320,201611,"english",TRUE,"5","2016 Democratic Party Platform"
"7","Our military must be second to none.","104",NA,7,"61620_201611",61620,201611,"english",TRUE,"5","Republican Platform 2016"
"8","Free enterprise, not regulation.","401",NA,8,"61620_201611",61620,201611,"english",TRUE,"5","Republican Platform 2016"
"9","We support Medicare for all who need it.","504",NA,9,"61320_201611",61320,201611,"english",TRUE,"5","2016 Democratic Party Platform"
"10","Thank you.","000",NA,10,"61320_201611",61320,201611,"english",TRUE,"5","2016 Democratic Party Platform"
"11","Protect our borders, respect our laws.","605.1",NA,11,"61620_201611",61620,201611,"english",TRUE,"5","Republican Platform 2016"
"12","Peace through diplomacy.","106",NA,12,"61320_201611",61320,201611,"english",TRUE,"5","2016 Democratic Party Platform"
"13","","503",NA,13,"61320_201611",61320,201611,"english",TRUE,"5","2016 Democratic Party Platform"
"14","A sentence nobody coded.",NA,NA,14,"61320_201611",61320,201611,"english",TRUE,"5","2016 Democratic Party Platform"
'''
# By hand: headings 1 (row 1); uncoded or empty 2 (rows 13, 14); kept 11:
# left = 504, 701, 504, 106 -> 4; right = 402, 603, 104, 401, 605.1 -> 5; neutral = 501, 000 -> 2.

# The website's "download coded document" CSV: text, cmp_code, eu_code; party and date in the file name.
WEBSITE_DOC = '''"text","cmp_code","eu_code"
"Introduction","H","NA"
"We will defend Social Security.","504","NA"
"Lower taxes create jobs.","402","NA"
"Education is a right.","506","NA"
'''


def test_rile_classes_of_codes():
    assert [rile_class(c) for c in ("104", "605.1", "4011", "202", "202.2", "701", "501", "000", "0", "H", "NA",
                                    None, float("nan"), "xyz")] == \
        ["right", "right", "right", "left", "left", "left", "neutral", "neutral", "neutral", None, None, None, None,
         None]


def test_manifestor_export_is_read_mapped_and_counted(tmp_path):
    path = tmp_path / "corpus.csv"
    path.write_text(MANIFESTOR_EXPORT)
    frame = read_download(path)
    assert len(frame) == 11
    assert frame["label"].value_counts().to_dict() == {"right": 5, "left": 4, "neutral": 2}
    assert frame.loc[frame["text"] == "Protect our borders, respect our laws.", "label"].item() == "right"
    assert sorted(frame["period"].unique()) == ["201211", "201611"]
    assert frame["item"].iloc[0] == "61320_201211:2" and frame["item"].is_unique
    assert "dropped 1 headings and 2 uncoded or empty rows" in frame.attrs["note"]


def test_website_documents_folder_takes_party_and_date_from_file_names(tmp_path):
    (tmp_path / "61320_200811.csv").write_text(WEBSITE_DOC)
    (tmp_path / "61620_200811.csv").write_text(WEBSITE_DOC.replace("Education is a right.", "Guns are a right."))
    frame = read_download(tmp_path)
    assert len(frame) == 6 and set(frame["period"]) == {"200811"} and set(frame["party"]) == {"61320", "61620"}
    assert frame["label"].tolist() == ["left", "right", "left"] * 2
    (tmp_path / "notes.csv").write_text(WEBSITE_DOC)
    with pytest.raises(SilverlabelError, match=r"notes.csv: no manifesto_id column and the file name is not"):
        read_download(tmp_path)


def test_preset_reads_the_download_and_splits_by_election(tmp_path, monkeypatch):
    # 3 elections x 2 parties x 20 coded sentences, so the split has room; the newest election is the test set
    lines = ['"text","cmp_code","eu_code","pos","manifesto_id","party","date"']
    codes = ["504", "402", "501", "701", "605", "106", "000", "401", "503", "202"]
    for date in ("200811", "201211", "201611"):
        for party in ("61320", "61620"):
            for i in range(20):
                lines.append(f'"Sentence {i} of {party} in {date}.","{codes[i % 10]}",NA,{i + 1},'
                             f'"{party}_{date}",{party},{date}')
    path = tmp_path / "corpus.csv"
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("MANIFESTO_CORPUS", str(path))
    ds = load_preset("manifestos", offline=False)
    assert ds.provenance.real and "local download" in ds.provenance.source
    assert ds.label_names == ["left", "neutral", "right"] and len(ds) == 120
    s = split(ds, n_train=60, n_test=30, seed=0)
    assert set(s.test.periods) == {"201611"} and set(s.train.periods + s.validation.periods) <= {"200811", "201211"}
    assert len(s.test) == 30 and not set(s.test.items) & set(s.train.items)
    with pytest.raises(SilverlabelError, match=r"temporal test split of 100 items takes the periods 201611, 201211"):
        split(ds, n_train=60, n_test=100, seed=0)


def test_a_broken_download_is_an_error_not_a_silent_stand_in(tmp_path, monkeypatch):
    monkeypatch.setenv("MANIFESTO_CORPUS", str(tmp_path / "missing.csv"))
    with pytest.raises(SilverlabelError, match="missing.csv: no such file or folder"):
        load_preset("manifestos", offline=False)


def test_stand_in_keeps_its_labels_and_splits_by_debate():
    ds = load_preset("manifestos", offline=True)
    assert not ds.provenance.real and ds.label_names == ["Democratic", "Moderator", "Republican"]
    s = split(ds, n_train=200, n_test=100, seed=0)
    assert set(s.test.periods) == {"2016-10-19"}  # the third debate, the last one
    assert "2016-10-19" not in set(s.train.periods)


# ------------------------------------------------------------------------------------- the API, served locally

KEY = "secret-test-key"
VERSIONS = {"versions": [{"name": "20230504115015", "tag": "2023-1"}, {"name": "20240506130023", "tag": "2024-1"},
                         {"name": "20240601000000", "tag": None}]}
META = {"61320_201211": {"party_id": "61320", "election_date": "201211", "manifesto_id": "61320_201211",
                         "language": "english", "annotations": True, "handbook": "4", "is_primary_doc": True},
        "61620_201611": {"party_id": "61620", "election_date": "201611", "manifesto_id": "61620_201611",
                         "language": "english", "annotations": True, "handbook": "5", "is_primary_doc": True},
        "61320_200811": {"party_id": "61320", "election_date": "200811", "manifesto_id": None,
                         "language": None, "annotations": False}}
TEXTS = {"61320_201211": [{"text": "Our Platform", "cmp_code": "H", "eu_code": "NA"},
                          {"text": "We will raise the minimum wage.", "cmp_code": "504", "eu_code": "NA"},
                          {"text": "Peace through diplomacy.", "cmp_code": "106", "eu_code": "NA"}],
         "61620_201611": [{"text": "Lower taxes.", "cmp_code": "402", "eu_code": "NA"},
                          {"text": "Clean water.", "cmp_code": "501", "eu_code": "NA"},
                          {"text": "Strong defence.", "cmp_code": "104", "eu_code": "NA"}]}


class _Api(BaseHTTPRequestHandler):
    requests: ClassVar[list] = []

    def log_message(self, *args):  # quiet
        pass

    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        q = urllib.parse.parse_qs(url.query)
        self.requests.append((url.path, q))
        function = url.path.rsplit("/", 1)[-1]
        if function == "list_metadata_versions":
            return self._send(200, VERSIONS)
        if q.get("api_key") != [KEY]:
            return self._send(401, {"error": "Unauthorized. Invalid api key"})
        keys = q.get("keys[]", [])
        if function == "metadata":
            return self._send(200, {"items": [META[k] for k in keys if k in META],
                                    "missing_items": [k for k in keys if k not in META]})
        if function == "texts_and_annotations":
            return self._send(200, {"items": [{"key": k, "kind": "manifesto", "items": TEXTS[k]} for k in keys
                                              if k in TEXTS], "missing_items": [k for k in keys if k not in TEXTS]})
        return self._send(404, {"error": "not found"})


@pytest.fixture()
def api():
    _Api.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/v1"
    server.shutdown()
    server.server_close()


def test_api_fetches_metadata_then_texts_of_the_newest_tagged_version(api):
    pytest.importorskip("httpx")
    frame = fetch_api(["61320_201211", "61620_201611", "61320_200811", "99999_201611"], api_key=KEY, root=api)
    assert frame["label"].tolist() == ["left", "left", "right", "neutral", "right"]  # the heading is dropped
    assert frame["period"].tolist() == ["201211"] * 2 + ["201611"] * 3
    assert frame.attrs["source"].endswith("corpus version 2024-1")
    assert "1 keys missing, 1 without annotations" in frame.attrs["note"]
    texts = [q for p, q in _Api.requests if p.endswith("texts_and_annotations")]
    assert texts[0]["keys[]"] == ["61320_201211", "61620_201611"] and texts[0]["version"] == ["2024-1"]


def test_api_key_from_the_environment_and_a_wrong_key_is_one_clear_error(api, monkeypatch):
    pytest.importorskip("httpx")
    monkeypatch.delenv("MANIFESTO_CORPUS", raising=False)
    monkeypatch.setenv("MANIFESTO_API_ROOT", api)
    monkeypatch.setenv("MANIFESTO_KEYS", "61320_201211,61620_201611")
    monkeypatch.setenv("MANIFESTO_API_KEY", KEY)
    ds = load_preset("manifestos", offline=False)
    assert ds.provenance.real and len(ds) == 5 and sorted(set(ds.periods)) == ["201211", "201611"]
    assert np.bincount(ds.labels).tolist() == [2, 1, 2]  # left, neutral, right
    monkeypatch.setenv("MANIFESTO_API_KEY", "wrong")
    with pytest.raises(SilverlabelError, match=r"metadata: HTTP 401 Unauthorized. Invalid api key \(check MANIFESTO_API_KEY\)"):
        load_preset("manifestos", offline=False)
