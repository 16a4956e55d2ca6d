"""The command line, run as a user runs it: a real subprocess."""

import subprocess
import sys

from lmforge import build_model


def lmforge(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "lmforge", *args], capture_output=True, text=True, input=stdin,
                          timeout=300)


def test_help():
    result = lmforge("--help")
    assert result.returncode == 0 and "info" in result.stdout


def test_info_gpt2_prints_the_published_count():
    result = lmforge("info", "gpt2")
    assert result.returncode == 0, result.stderr
    assert "124,439,808" in result.stdout and "decoder" in result.stdout


def test_info_on_a_checkpoint(tmp_path):
    build_model("tiny-t5").save(tmp_path / "ckpt")
    result = lmforge("info", str(tmp_path / "ckpt"))
    assert result.returncode == 0, result.stderr
    assert "encoder-decoder" in result.stdout and "seq2seq-lm" in result.stdout


def test_unknown_preset_is_one_line_and_exit_2():
    result = lmforge("info", "gpt-7")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "unknown preset 'gpt-7'" in result.stderr and "Traceback" not in result.stderr
