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
    # the model in the engine core's process: vLLM's CPU platform keeps ``uni`` only when this variable is 0
    assert cmd[cmd.index("--distributed-executor-backend") + 1] == "uni"
    assert vllm_server.server_env()["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"


def test_the_setup_scripts_build_once_and_start_over_after_a_killed_build(tmp_path):
    """scripts/cache.sh, which both setup scripts source: a finished build is stamped and never redone; a failed
    one leaves no stamp, so the next run empties the folder and builds again."""
    import subprocess

    script = f"""
    set -euo pipefail
    . scripts/cache.sh
    step() {{ echo run >> {tmp_path}/log; echo "$1" > "$1/out"; [ "${{FAIL:-0}}" = 0 ]; }}
    build_once {tmp_path}/dest .done step
    link_from_repo {tmp_path}/link {tmp_path}/dest
    """

    def run(**env):
        return subprocess.run(["bash", "-c", script], cwd=vllm_server.REPO, capture_output=True, text=True,
                              env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env})

    failed = run(FAIL="1")
    assert failed.returncode != 0 and not (tmp_path / "dest" / ".done").exists()
    (tmp_path / "dest" / "leftover").write_text("x")
    done = run()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "dest") and (tmp_path / "link").resolve() == tmp_path / "dest"
    assert (tmp_path / "dest" / ".done").exists() and not (tmp_path / "dest" / "leftover").exists()
    assert run().returncode == 0
    assert (tmp_path / "log").read_text().split() == ["run", "run"]  # the third run built nothing
