"""Start-up errors (one line, exit 2), a full queue (429 + Retry-After), keep-alive comments, SIGTERM draining."""

import json
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from lmforge.cli import main
from serve_helpers import Server, free_port, tiny_checkpoints

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return tiny_checkpoints(tmp_path_factory.mktemp("serve_life"))


def test_start_up_errors_are_one_line_and_exit_2(checkpoints, tmp_path, capsys):
    def start_fails(*args: str) -> str:
        """`lmforge serve ARGS` must return 2 with one line on stderr, which is returned."""
        assert main(["serve", *args]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lmforge serve: error: "), lines
        return lines[0]

    gpt = str(checkpoints["gpt"])
    assert "not a checkpoint folder" in start_fails(str(tmp_path), "--port", str(free_port()))
    assert "two models are named 'gpt'" in start_fails(gpt, "--model", f"gpt={checkpoints['mlm']}",
                                                       "--port", str(free_port()))
    line = start_fails(gpt, "--task", "fill-mask", "--port", str(free_port()))
    assert "cannot serve fill-mask" in line and "text-generation" in line
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        line = start_fails(gpt, "--port", str(taken.getsockname()[1]))
    assert "already in use" in line and "--port" in line
    assert "not a TCP port" in start_fails(gpt, "--port", "99999")
    # the same as a real process
    done = subprocess.run([sys.executable, "-m", "lmforge", "serve", str(tmp_path), "--port", str(free_port())],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "not a checkpoint" in done.stderr


def stream_request(url, body, seen: list, headers=None):
    """Read one streamed response, appending every raw event to `seen`."""
    with requests.post(url + "/v1/completions", json={**body, "stream": True}, stream=True, timeout=120,
                       headers=headers) as response:
        seen.append(response.status_code)
        for event in response.iter_lines(delimiter=b"\n\n"):
            if event:
                seen.append(event.decode())


def stream_in_background(server, max_tokens: int) -> tuple[threading.Thread, list]:
    """A greedy stream of `max_tokens` read on a thread; returns once its status and 3 chunks have arrived."""
    events: list = []
    body = {"prompt": "the cat", "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
    reader = threading.Thread(target=stream_request, args=(server.url, body, events))
    reader.start()
    while len(events) < 4:
        time.sleep(0.02)
    return reader, events


def test_full_queue_gets_429_with_retry_after_and_the_others_finish(checkpoints):
    server = Server(str(checkpoints["slow"]), "--max-batch", "1", "--max-queue", "1", "--keepalive-seconds", "0.2",
                    "--cors-origin", "http://app.example")
    try:
        long = {"prompt": "the cat", "max_tokens": 300, "temperature": 0, "ignore_eos": True}
        first, second = [], []
        threads = [threading.Thread(target=stream_request, args=(server.url, long, first))]
        threads[0].start()
        while len(first) < 3:  # the first is running
            time.sleep(0.02)
        threads.append(threading.Thread(target=stream_request, args=(server.url, {**long, "max_tokens": 5}, second)))
        threads[1].start()
        deadline = time.monotonic() + 10
        while server.metric('lmforge_queue_depth{model="slow"}') < 1:  # the second waits in the queue
            assert time.monotonic() < deadline
            time.sleep(0.02)
        third = requests.post(server.url + "/v1/completions", json={"prompt": "x", "max_tokens": 2}, timeout=30)
        assert third.status_code == 429 and third.headers["Retry-After"].isdigit()
        assert third.json()["error"]["code"] == "queue_full" and third.json()["error"]["type"] == "rate_limit_error"
        for thread in threads:
            thread.join(120)
        assert first[-1] == "data: [DONE]" and second[-1] == "data: [DONE]"
        assert ": keep-alive" in second  # it waited behind the long one, with keep-alive comments
        preflight = requests.options(server.url + "/v1/completions", timeout=10, headers={
            "Origin": "http://app.example", "Access-Control-Request-Method": "POST"})
        assert preflight.headers["access-control-allow-origin"] == "http://app.example"
        other = requests.get(server.url + "/v1/models", headers={"Origin": "http://elsewhere.example"}, timeout=10)
        assert "access-control-allow-origin" not in other.headers
    finally:
        log = server.stop()
    assert "KV cache up to" in log  # the memory the KV slots may take, printed at start


def test_cors_is_off_by_default_and_an_error_after_the_headers_goes_into_the_stream(checkpoints):
    server = Server(str(checkpoints["slow"]), "--drain-seconds", "0.3")
    reader, events = stream_in_background(server, max_tokens=3000)
    allowed = requests.get(server.url + "/v1/models", headers={"Origin": "http://app.example"}, timeout=10)
    assert "access-control-allow-origin" not in allowed.headers
    server.process.send_signal(signal.SIGTERM)  # the drain time is too short for 3000 tokens
    reader.join(120)
    assert events[0] == 200 and events[-1] == "data: [DONE]"
    error = json.loads(events[-2][6:])["error"]
    assert error["type"] == "server_error" and "shutting down" in error["message"]
    assert server.process.wait(timeout=60) == 0


def test_sigterm_mid_stream_stops_admitting_drains_and_exits_0(checkpoints):
    server = Server(str(checkpoints["slow"]), "--drain-seconds", "60")
    reader, events = stream_in_background(server, max_tokens=120)
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert requests.get(server.url + "/health", timeout=5).status_code == 503
    refused = requests.post(server.url + "/v1/completions", json={"prompt": "x", "max_tokens": 2}, timeout=10)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"
    reader.join(120)
    assert events[-1] == "data: [DONE]" and '"finish_reason": "length"' in events[-2]  # the running stream finished
    assert server.process.wait(timeout=60) == 0


def test_library_imports_without_the_serve_extra_and_serve_says_what_to_install(checkpoints):
    code = ("import sys; sys.modules['fastapi'] = sys.modules['uvicorn'] = None\n"
            "import lmforge, lmforge.cli, lmforge.serve.server\n"
            f"sys.exit(lmforge.cli.main(['serve', {str(checkpoints['gpt'])!r}, '--port', '{free_port()}']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "pip install 'lmforge[serve]'" in done.stderr
