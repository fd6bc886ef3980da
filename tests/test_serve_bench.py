"""bench/serve_bench.py counts every status as what it is and times served answers only, with
either load generator."""

from __future__ import annotations

import importlib.util
import itertools
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench/serve_bench.py"
SERVED_SECONDS = 0.03  # a served answer takes this long; a refusal none


@pytest.fixture(scope="module")
def serve_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("serve_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_a_level_counts_each_status_class_and_times_only_served_answers(
    serve_bench: ModuleType,
) -> None:
    statuses = [200, 503, 200, 400, 500, 503, 200, 201]
    latencies = [0.1, 0.001, 0.3, 0.002, 0.003, 0.001, 0.2, 0.4]
    level = serve_bench.level_of(8, statuses, latencies, 2.0)
    assert (level.answered, level.busy, level.other) == (8, 2, 2)
    assert level.ok_per_second == 4 / 2.0
    assert level.p50 == pytest.approx(0.25)  # of 0.1, 0.2, 0.3, 0.4: the fast refusals left out
    assert level.p99 == pytest.approx(0.397)


@pytest.fixture
def mixed_server() -> Iterator[tuple[str, Counter[int]]]:
    """A loopback server answering 200 (slowly), 503 and 400 (at once) in turn; what it sent."""
    sent: Counter[int] = Counter()
    turns = itertools.cycle([200, 503, 400])
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out at once: refusals take no time

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            with lock:
                status = next(turns)
            if status == 200:
                time.sleep(SERVED_SECONDS)
            self.send_response(status)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
            with lock:
                sent[status] += 1

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/predictions", sent
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_the_wrk_client_counts_each_status_and_times_only_served_answers(
    serve_bench: ModuleType, mixed_server: tuple[str, Counter[int]]
) -> None:
    url, sent = mixed_server
    level = serve_bench.load_with_wrk(url, b"picture", 2, 1.0)
    served = level.answered - level.busy - level.other
    # wrk stops with up to one request per connection unanswered; the server may have sent it.
    assert 0 <= sent[200] - served <= 2 and served > 5
    assert 0 <= sent[503] - level.busy <= 2 and level.busy > 5
    assert 0 <= sent[400] - level.other <= 2 and level.other > 5
    assert level.ok_per_second == pytest.approx(served / 1.0, rel=0.2)
    # Two in three answers come at once: over all answers the median would be near 0.
    assert SERVED_SECONDS <= level.p50 < 10 * SERVED_SECONDS
