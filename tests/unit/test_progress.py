"""Without a terminal, progress is one log line per finished stage (and a line a minute during a long one), since
a rich bar there only shows when it ends; quiet stays silent."""

import logging

import pytest

from silverlabel import progress


@pytest.fixture
def loud():
    old = progress._QUIET["value"]
    progress.set_quiet(False)
    yield
    progress.set_quiet(old)


def test_a_line_per_finished_stage_without_a_terminal(loud, caplog, monkeypatch):
    assert not progress._terminal()  # pytest captures the output: no terminal, as in CI or under nohup
    caplog.set_level(logging.INFO, logger="silverlabel.progress")
    with progress.progress_bar("imdb · gold · n=40 · seed 1", total=3) as advance:
        for _ in range(3):
            advance(1)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("done: imdb · gold · n=40 · seed 1 (3/3 in ")
    monkeypatch.setattr(progress, "EVERY_S", 0.0)  # a long stage also says how far it is
    caplog.clear()
    with progress.progress_bar("labels", total=3) as advance:
        advance(1)
        advance(1)
        advance(1)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("labels: 1/3 after ") and lines[1].startswith("labels: 2/3 after ")
    assert lines[-1].startswith("done: labels (3/3")


def test_no_line_for_a_stage_that_fails_and_none_when_quiet(loud, caplog):
    caplog.set_level(logging.INFO, logger="silverlabel.progress")
    with pytest.raises(RuntimeError):
        with progress.progress_bar("x", total=2) as advance:
            advance(1)
            raise RuntimeError("boom")
    assert not [r for r in caplog.records if r.getMessage().startswith("done:")]
    progress.set_quiet(True)
    with progress.progress_bar("y", total=2) as advance:
        advance(2)
    assert not caplog.records
