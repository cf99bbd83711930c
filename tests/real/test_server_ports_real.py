"""The test harness starts a real Triton again when another process took a port it
was given (tests/harness/net.free_port's race: the port was free a moment ago).

Seen in CI: a Triton's metrics port had meanwhile become another server's gRPC port,
and the readiness probe read HTTP/2 bytes (http.client.BadStatusLine) instead of
waiting."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from tests.harness.real.servers import TritonServer, find_triton, http_status


def test_a_taken_port_is_replaced_and_the_server_starts(real_log_dir: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = int(holder.getsockname()[1])
        server = TritonServer(workdir=real_log_dir / "ports", models=[], install=find_triton(),
                              metrics_port=taken)
        try:
            server.start(timeout=60)
            assert server.metrics_port != taken
            assert http_status(server.metrics_url) == 200
        finally:
            server.stop()
        assert "already in use" in server.log_path.read_text(errors="replace")


def test_something_else_answering_is_not_ready() -> None:
    # A listener that answers HTTP/1 requests with HTTP/2 bytes (a gRPC port).
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = int(srv.getsockname()[1])
        def answer() -> None:
            conn, _ = srv.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x03\x7f\xff\xff\xff\n")

        t = threading.Thread(target=answer, daemon=True)
        t.start()
        assert http_status(f"http://127.0.0.1:{port}/metrics", timeout=5) is None
        t.join(5)
