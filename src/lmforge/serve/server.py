"""Start a server: check everything that can be wrong before binding (one clear error), load the
models, start one engine thread per model, run uvicorn; SIGTERM drains, then exits cleanly."""

from __future__ import annotations

import errno
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from .app import ServerState, build_app
from .metrics import Metrics
from .models import ServedModel, parse_dtypes, parse_model_specs, parse_task_limits


@dataclass
class ServeOptions:
    model: str
    extra_models: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    dtypes: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    cors_origins: list[str] = field(default_factory=list)
    max_batch: int = 16
    max_queue: int = 64
    prefill_chunk: int = 128
    max_body_bytes: int = 1 << 20
    drain_seconds: float = 30.0
    keepalive_seconds: float = 10.0


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, or `InputError` when the address is taken or cannot be used."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise InputError(f"port {port} on {host} is already in use; stop the other server or pick another "
                             "with --port") from None
        raise InputError(f"cannot listen on {host}:{port} ({error.strerror}); check --host and --port") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def load_models(options: ServeOptions, metrics: Metrics) -> dict[str, ServedModel]:
    specs = parse_model_specs(options.model, options.extra_models)
    limits = parse_task_limits(options.tasks, [name for name, _ in specs])
    dtypes = parse_dtypes(options.dtypes, [name for name, _ in specs])
    for name, path in specs:
        if not (Path(path) / "config.json").is_file():
            raise InputError(f"{path} is not a checkpoint folder (no config.json); give a folder written by "
                             "lmforge or a Hugging Face model folder")
    return {name: ServedModel(name, Path(path), metrics, limits.get(name), dtypes.get(name), max_batch=options.max_batch,
                              max_queue=options.max_queue, prefill_chunk=options.prefill_chunk)
            for name, path in specs}


def serve(options: ServeOptions, log=print) -> int:
    """Run until SIGTERM/SIGINT; returns 0 after draining."""
    import uvicorn  # optional: the serve extra installs it

    for number, what in ((options.max_batch, "--max-batch"), (options.max_queue, "--max-queue"),
                         (options.prefill_chunk, "--prefill-chunk")):
        if number < 1:
            raise InputError(f"{what} must be >= 1, got {number}")
    if not 0 <= options.port <= 65535:
        raise InputError(f"--port {options.port} is not a TCP port; give one from 1 to 65535 (0: any free port)")
    sock = bind(options.host, options.port)
    try:
        metrics = Metrics()
        models = load_models(options, metrics)
    except BaseException:
        sock.close()
        raise
    for served in models.values():
        mib = served.kv_bytes_upper_bound() / 2**20
        log(f"model {served.name}: {served.model.config.family} {served.model.task}, tasks {', '.join(served.tasks)}; "
            f"KV cache up to {mib:.1f} MiB ({served.engine.max_batch} slots x {served.context_length} tokens)")
    state = ServerState(models, metrics, api_key=options.api_key, max_body_bytes=options.max_body_bytes,
                        keepalive_seconds=options.keepalive_seconds)
    app = build_app(state)
    if options.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware  # optional: the serve extra installs it

        app.add_middleware(CORSMiddleware, allow_origins=options.cors_origins, allow_methods=["*"],
                           allow_headers=["*"])
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5)
    server = _draining_server(uvicorn.Server, config, state, options.drain_seconds, log)
    for served in models.values():
        served.engine.start()
    log(f"serving {', '.join(models)} on http://{options.host}:{options.port} (playground at /)")
    sys.stdout.flush()
    try:
        server.run(sockets=[sock])
    finally:
        for served in models.values():
            served.engine.shutdown()
        sock.close()
    return 0


def _draining_server(base, config, state: ServerState, drain_seconds: float, log):
    """A uvicorn server whose first SIGTERM/SIGINT stops admitting (503), lets running requests finish for
    up to `drain_seconds`, then exits; a second signal exits at once."""

    class DrainingServer(base):
        def handle_exit(self, sig, frame) -> None:  # not re-raised afterwards: the process exits 0
            if state.draining:
                self.should_exit = self.force_exit = True
                return
            state.draining = True
            threading.Thread(target=self._drain, daemon=True).start()

        def _drain(self) -> None:
            engines = [m.engine for m in state.models.values()]
            for engine in engines:
                engine.stop_admitting()
            deadline = time.monotonic() + drain_seconds
            while time.monotonic() < deadline and not all(e.idle for e in engines):
                time.sleep(0.05)
            for engine in engines:
                if not engine.idle:
                    log(f"model {engine.name}: drain time ({drain_seconds:g} s) is over; ending its running requests")
                engine.shutdown("the server is shutting down (drain time over)")
            time.sleep(0.2)  # let the last events reach their streams
            self.should_exit = True

    return DrainingServer(config)
