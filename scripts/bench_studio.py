"""The studio's latency: `POST /api/sample` with n = 5 under 1 and under 20 concurrent clients.

    python scripts/bench_studio.py                                  # the default model (poem)
    python scripts/bench_studio.py faithful --clients 1 20 --json latency.json

Starts `textvae serve MODEL` on a free local port in a child process, as a user would, and waits until it answers.
Each client is a thread that posts unseeded requests back to back over one kept-alive connection, as a browser keeps
one (each sends its next request as soon as its last is answered); after --warmup requests per client, each client
times --requests more. The figures are the median (p50) and 95th percentile (p95) of the wall time of one request,
client side, in ms, and the requests answered per second; `ratio` divides each p95 by the p50 under the first
--clients value.
"""

import argparse
import http.client
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from textvae.atomic import write_text

BODY = json.dumps({"n": 5}).encode()
START_TIMEOUT = 300  # seconds for the studio to load its model and answer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(connection: http.client.HTTPConnection) -> float:
    """One request's wall time in seconds over a kept-alive connection (as a browser keeps one); a non-200
    answer stops the benchmark."""
    start = time.perf_counter()
    connection.request("POST", "/api/sample", BODY, {"Content-Type": "application/json"})
    answer = connection.getresponse()
    body = answer.read()
    elapsed = time.perf_counter() - start
    if answer.status != 200:
        raise RuntimeError(f"HTTP {answer.status}: {body[:200]!r}")
    if len(json.loads(body)["poems"]) != 5:
        raise RuntimeError("asked for 5 poems, got another number")
    return elapsed


def wait_until_up(base: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"error: the studio exited with status {server.returncode} before answering")
        try:
            urllib.request.urlopen(f"{base}/api/models", timeout=5).read()
            return
        except OSError:
            time.sleep(0.5)
    sys.exit(f"error: the studio did not answer within {START_TIMEOUT} s")


def load(port: int, clients: int, warmup: int, requests: int) -> dict:
    """Latencies of `clients` threads posting back to back: p50, p95 (ms) and requests per second."""
    timed: list[list[float]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []
    start_line = threading.Barrier(clients)

    def client(i: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            start_line.wait()
            for k in range(warmup + requests):
                elapsed = post(connection)
                if k >= warmup:
                    timed[i].append(elapsed)
        except BaseException as error:  # reported by the main thread
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"a client failed: {errors[0]}")
    wall = time.perf_counter() - began
    latencies = sorted(t for per_client in timed for t in per_client)
    return dict(clients=clients, requests=len(latencies), p50_ms=1000 * statistics.median(latencies),
                p95_ms=1000 * latencies[int(0.95 * (len(latencies) - 1))],
                requests_per_s=clients * (warmup + requests) / wall)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default="poem", help="a shipped model's name or a model folder")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 20], help="concurrent clients (default 1 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests per client first (default 3)")
    parser.add_argument("--requests", type=int, default=0,
                        help="timed requests per client (default: 400 in all, at least 10 each)")
    parser.add_argument("--json", type=Path, help="write the figures as JSON")
    args = parser.parse_args()
    if min(args.clients) < 1 or args.warmup < 0 or args.requests < 0:
        parser.error("--clients must be >= 1, --warmup and --requests >= 0")
    return args


def main() -> None:
    args = parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "textvae", "serve", args.model, "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_up(base, server)
        rows = []
        for clients in args.clients:
            requests = args.requests or max(10, 400 // clients)
            row = load(port, clients, args.warmup, requests)
            rows.append(row)
            print(f"{clients:>3} clients: p50 {row['p50_ms']:7.1f} ms, p95 {row['p95_ms']:7.1f} ms, "
                  f"{row['requests_per_s']:6.1f} requests/s ({row['requests']} timed)", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    for row in rows:
        row["ratio"] = row["p95_ms"] / rows[0]["p50_ms"]
    report = dict(model=args.model, n=5, rows=rows)
    print(f"p95 under {rows[-1]['clients']} clients / p50 under {rows[0]['clients']}: {rows[-1]['ratio']:.2f}")
    if args.json:
        write_text(args.json, json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
