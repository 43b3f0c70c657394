"""A soak test of the studio: thousands of mixed requests from concurrent clients, some bad, some abandoned.

    python scripts/soak_studio.py                                   # 5,000 requests from 20 clients, model poem
    python scripts/soak_studio.py --requests 600 --clients 20 --out soak.json

Starts `textvae serve MODEL` on a free local port in a child process, as a user would (its stderr kept in a log),
and sends --requests requests drawn with a fixed seed: samples, reconstructions, variations (reconstruct with
n > 0) and interpolations of a few real poems with a few settings each, 10 % bad bodies (wrong types, n out of
range, unknown fields, empty text, malformed JSON, an unknown model) and 5 % abandoned requests (a slow valid
sample whose client closes its socket before the answer). Each client is a thread with one kept-alive connection
that sends its next request as soon as its last is answered. It reports the answers by status code, the p50, p95
and p99 latency (client side, of the 200 and 400 answers) per kind and overall, the server's resident memory and
threads after --warmup requests, halfway and at the end, and the tracebacks in the server's log. It exits 1 when a
target fails: every answer 200, 400 or 503 with a JSON object as its body, valid bodies never 400 and bad ones
always 400, no traceback in the log, and resident memory at the end within 10 % of halfway.
"""

import argparse
import http.client
import json
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from textvae.atomic import write_text

POEMS = [  # in the shipped models' (traditional) script
    "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。",
    "春眠不覺曉，處處聞啼鳥。夜來風雨聲，花落知多少。",
    "白日依山盡，黃河入海流。欲窮千里目，更上一層樓。",
    "朝辭白帝彩雲間，千里江陵一日還。兩岸猿聲啼不住，輕舟已過萬重山。",
    "空山新雨後，天氣晚來秋。明月松間照，清泉石上流。竹喧歸浣女，蓮動下漁舟。隨意春芳歇，王孫自可留。",
]
SETTINGS = [{}, dict(form="5x4", rhyme=True), dict(form="7x4", rhyme=True, meter=True), dict(form="5x8"),
            dict(keywords="月"), dict(form="5x4", acrostic="春夏秋冬"), dict(temperature=0.8, top_p=0.9)]
BAD = [  # (path, body as sent): each must be a 400
    ("/api/sample", json.dumps(dict(n="many"))), ("/api/sample", json.dumps(dict(n=1000))),
    ("/api/reconstruct", json.dumps(dict(text=POEMS[0], n=21))), ("/api/sample", json.dumps(dict(colour="red"))),
    ("/api/reconstruct", json.dumps(dict(text=""))), ("/api/interpolate", json.dumps(dict(a="", b=POEMS[1]))),
    ("/api/interpolate", json.dumps(dict(a=POEMS[0], b=POEMS[1], steps="five"))),
    ("/api/reconstruct", json.dumps(dict(text=[POEMS[0]]))), ("/api/sample", json.dumps(dict(model="nope"))),
    ("/api/sample", '{"n": 5'), ("/api/reconstruct", "not json"), ("/api/sample", "[1, 2]"),
]
SLOW = json.dumps(dict(n=100, form="7x8", rhyme=True, meter=True, seed=0))  # what an abandoning client asks for
MIX = dict(sample=0.40, reconstruct=0.15, vary=0.15, interpolate=0.15, bad=0.10, abandon=0.05)
ABANDON_AFTER = 0.05  # seconds between sending the slow request and closing the socket: the server has it by then
START_TIMEOUT = 300  # seconds for the studio to load its model and answer
CLIENT_TIMEOUT = 120  # seconds a client waits for an answer: beyond the studio's own wait for its model
SETTLE = 2.0  # seconds after the last answer for abandoned requests still running to finish before the last reading
MEMORY_GROWTH = 0.10  # the most resident memory may grow from halfway to the end


def draw(rng: random.Random) -> tuple[str, str, str]:
    """(kind, path, body) of one request of the mix."""
    kind = rng.choices(list(MIX), weights=list(MIX.values()))[0]
    a, b = rng.sample(POEMS, 2)
    seed = {"seed": rng.randrange(1000)} if rng.random() < 0.3 else {}
    body = dict(
        sample=lambda: ("/api/sample", dict(rng.choice(SETTINGS), n=rng.choice([1, 2, 5, 10]), **seed)),
        reconstruct=lambda: ("/api/reconstruct", dict(text=a, **seed)),
        vary=lambda: ("/api/reconstruct", dict(text=a, n=rng.choice([1, 3, 5]), spread=rng.choice([0.5, 1.0]),
                                                **seed)),
        interpolate=lambda: ("/api/interpolate", dict(a=a, b=b, steps=rng.choice([3, 5, 8]),
                                                      path=rng.choice(["linear", "slerp", "crossings"]), **seed)),
        bad=lambda: rng.choice(BAD),
        abandon=lambda: ("/api/sample", SLOW),
    )[kind]()
    path, sent = body
    return kind, path, sent if isinstance(sent, str) else json.dumps(sent)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def reading(pid: int) -> dict:
    """The server's resident memory (MiB) and threads, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return dict(rss_mib=int(fields["VmRSS"].split()[0]) / 1024, threads=int(fields["Threads"]))


def post(connection: http.client.HTTPConnection, path: str, body: str) -> tuple[int | str, float, bool]:
    """(status, seconds, whether the body is a JSON object, with an "error" unless it is a 200)."""
    start = time.perf_counter()
    connection.request("POST", path, body.encode(), {"Content-Type": "application/json"})
    answer = connection.getresponse()
    raw = answer.read()
    elapsed = time.perf_counter() - start
    try:
        parsed = json.loads(raw)
        is_json = isinstance(parsed, dict) and (answer.status == 200 or isinstance(parsed.get("error"), str))
    except ValueError:
        is_json = False
    return answer.status, elapsed, is_json


def abandon(port: int, path: str, body: str) -> None:
    """Send a valid slow request and close the socket before its answer comes."""
    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(body.encode())}\r\n\r\n{body}".encode())
        time.sleep(ABANDON_AFTER)


def run(port: int, requests: list[tuple[str, str, str]], clients: int, halfway=None) -> list[dict]:
    """Each request's kind, status and latency, sent by `clients` threads; `halfway()` is called once, when half
    of them have been answered."""
    results, lock, position = [], threading.Lock(), iter(range(len(requests)))

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
        while True:
            with lock:
                i = next(position, None)
            if i is None:
                break
            kind, path, body = requests[i]
            result = dict(kind=kind, valid=kind != "bad", status="abandoned", seconds=None, json=True)
            try:
                if kind == "abandon":
                    abandon(port, path, body)
                else:
                    result["status"], result["seconds"], result["json"] = post(connection, path, body)
            except (http.client.HTTPException, OSError) as error:
                result.update(status=f"no answer ({type(error).__name__})", json=False)
                connection.close()  # reopened by the next request
            with lock:
                results.append(result)
                if halfway and len(results) == len(requests) // 2:
                    halfway()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank p-th percentile, in ms."""
    ranked = sorted(values)
    return 1000 * ranked[max(0, min(len(ranked) - 1, round(p / 100 * len(ranked)) - 1))]


def latencies(results: list[dict]) -> dict:
    """p50, p95 and p99 (ms) of the 200 and 400 answers, per kind and overall."""
    timed = [r for r in results if r["status"] in (200, 400)]
    table = {}
    for kind in [*MIX, "overall"]:
        seconds = [r["seconds"] for r in timed if kind in (r["kind"], "overall")]
        if seconds:
            table[kind] = dict(answers=len(seconds), **{f"p{p}_ms": percentile(seconds, p) for p in (50, 95, 99)})
    return table


def summary(results: list[dict], memory: dict, tracebacks: int) -> dict:
    statuses: dict[str, int] = {}
    for r in results:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    answered = [r for r in results if r["status"] != "abandoned"]
    growth = memory["end"]["rss_mib"] / memory["middle"]["rss_mib"] - 1
    targets = {
        "every answer 200, 400 or 503": all(r["status"] in (200, 400, 503) for r in answered),
        "every answer a JSON object": all(r["json"] for r in answered),
        "valid bodies never 400, bad ones always 400": all((r["status"] == 400) != r["valid"] for r in answered
                                                           if r["status"] in (200, 400)),
        "no traceback in the server's log": tracebacks == 0,
        f"memory at the end within {MEMORY_GROWTH:.0%} of halfway": growth <= MEMORY_GROWTH,
    }
    return dict(requests=len(results), statuses=dict(sorted(statuses.items())), latency=latencies(results),
                memory=memory, memory_growth=growth, tracebacks=tracebacks, targets=targets)


def show(report: dict) -> None:
    print("status     count")
    for status, count in report["statuses"].items():
        print(f"{status:<10} {count:>5}")
    print(f"\n{'kind':<12} {'answers':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for kind, row in report["latency"].items():
        print(f"{kind:<12} {row['answers']:>7} {row['p50_ms']:8.1f} {row['p95_ms']:8.1f} {row['p99_ms']:8.1f}")
    memory = report["memory"]
    print("\nserver: " + ", ".join(f"{when} {m['rss_mib']:.0f} MiB resident, {m['threads']} threads"
                                   for when, m in memory.items()) + f" (end/halfway {report['memory_growth']:+.1%})")
    print(f"tracebacks in the server's log: {report['tracebacks']}")
    for target, met in report["targets"].items():
        print(f"{'pass' if met else 'FAIL'}: {target}")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default="poem", help="a shipped model's name or a model folder")
    parser.add_argument("--requests", type=int, default=5000, help="requests in all (default 5000)")
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients (default 20)")
    parser.add_argument("--warmup", type=int, default=200, help="requests of the mix before the first reading "
                                                                "(default 200)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the request mix (default 0)")
    parser.add_argument("--log", type=Path, help="keep the server's log here (default: a temporary file)")
    parser.add_argument("--out", type=Path, help="write the report as JSON")
    args = parser.parse_args()
    if args.requests < 2 or args.clients < 1 or args.warmup < 0:
        parser.error("--requests must be >= 2, --clients >= 1 and --warmup >= 0")
    return args


def soak(args, log: Path) -> dict:
    rng = random.Random(args.seed)
    warmup, requests = [draw(rng) for _ in range(args.warmup)], [draw(rng) for _ in range(args.requests)]
    port = free_port()
    with log.open("w") as stderr:
        server = subprocess.Popen([sys.executable, "-m", "textvae", "serve", args.model, "--port", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        wait_until_up(f"http://127.0.0.1:{port}", server)
        run(port, warmup, args.clients)
        memory = dict(start=reading(server.pid))
        results = run(port, requests, args.clients, halfway=lambda: memory.update(middle=reading(server.pid)))
        time.sleep(SETTLE)
        memory["end"] = reading(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return summary(results, memory, log.read_text().count("Traceback"))


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        report = soak(args, args.log or Path(scratch) / "server.log")
    report = dict(model=args.model, clients=args.clients, seed=args.seed, **report)
    show(report)
    if args.out:
        write_text(args.out, json.dumps(report, indent=2) + "\n")
    sys.exit(0 if all(report["targets"].values()) else 1)


if __name__ == "__main__":
    main()
