"""The vLLM venv is optional outside CI and required in it: absent, the server tests skip with the install line
locally and fail in CI (CI=true)."""

import pytest

from tests import vllm_server


def test_a_missing_vllm_venv_skips_locally_and_fails_in_ci(tmp_path, monkeypatch):
    monkeypatch.setattr(vllm_server, "VENV", tmp_path / "no-venv")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="run: bash scripts/setup_vllm.sh"):
        vllm_server.require_vllm()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="vLLM is not installed"):
        vllm_server.require_vllm()


def test_an_unfinished_install_is_not_taken_for_a_finished_one(tmp_path, monkeypatch):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    monkeypatch.setattr(vllm_server, "VENV", venv)
    assert vllm_server.vllm_python() is None  # no stamp: setup_vllm.sh did not finish
    (venv / ".silverlabel-installed").write_text("")
    assert vllm_server.vllm_python() == venv / "bin" / "python"


def test_the_server_command_is_the_one_the_tests_measured():
    cmd = vllm_server.server_command(vllm_server.VENV / "bin" / "python", vllm_server.REPO, 8000)
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    for flag, value in (("--dtype", "float32"), ("--max-model-len", "2048"), ("--block-size", "32")):
        assert cmd[cmd.index(flag) + 1] == value
    assert "--enforce-eager" in cmd and vllm_server.server_env()["VLLM_CPU_KVCACHE_SPACE"] == "1"
