"""Load test for ``cfrec serve``: throughput and latency percentiles per endpoint.

Starts ``cfrec serve`` on a free loopback port (127.0.0.1 only), waits until ``/readyz`` says
ready, then drives it with a fixed number of requests at a fixed concurrency (one keep-alive
connection per concurrent client) and stops the service. For each endpoint it prints the
requests, errors (non-2xx answers and failed connections), throughput, the p50/p95/p99/max
latency seen by the client and the service's CPU time per request (user + system, all its
processes), plus the machine's load average before and after: the service and this load
generator share the machine, so other work there shows in the latencies, while CPU time per
request says what the service itself spends.

    python benchmarks/serve_load.py --build mf-ml100k            # BiasedMF of ML-100K (u1 train)
    python benchmarks/serve_load.py --build ials-ml1m            # iALS of synthetic_like("ml-1m")
    python benchmarks/serve_load.py --model models/mf --requests 5000 --json load.json

The load generator speaks HTTP/1.1 itself (one ``asyncio.Protocol`` per connection, on uvloop
where installed): a general-purpose client (httpx) costs several times more CPU per request than
the service's own work, and here both share two cores, so the client would measure itself. Its
own CPU time per request is printed beside the service's, with the cores everything else on the
machine kept busy during each run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

HOST = "127.0.0.1"  # loopback only, always


# ---------------------------------------------------------------------- models to serve
def build_model(name: str, out: Path, seed: int = 0) -> Path:
    """Train and save one of the benchmark's models into ``out``."""
    from cfrec.data import load_dataset, make_splits
    from cfrec.data.synthetic import synthetic_like
    from cfrec.models import make_model

    if name == "mf-ml100k":  # what `cfrec train ml-100k --model mf` trains: fold u1's train part
        data = load_dataset("ml-100k")
        train = make_splits(data, "u1")[0].train
        model = make_model("mf", seed=seed).fit(train)
    elif name == "ials-ml1m":
        data = synthetic_like("ml-1m", seed=seed)
        model = make_model("ials", seed=seed).fit(data)
    else:
        raise SystemExit(f"unknown --build {name!r}; expected mf-ml100k or ials-ml1m")
    model.save(out)
    return out


# ---------------------------------------------------------------------- the service
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start_service(model_dir: Path, port: int, log_path: Path, workers: int,
                  access_log: bool) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "cfrec", "serve", str(model_dir), "--host", HOST, "--port", str(port),
           "--workers", str(workers), "--log-level", "info"]
    if not access_log:
        cmd.append("--no-access-log")
    log = open(log_path, "wb")  # noqa: SIM115 - closed by the child's exit
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the service exited with status {proc.returncode} before it was ready")
        try:
            status = run_async(_one_request(port, get("/readyz")))
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise SystemExit("the service was not ready in time")


def stop_service(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then the exit status; 0 for a graceful stop (uvicorn re-raises the SIGTERM it
    handled once it has shut down, so the process ends by that signal)."""
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
    return 0 if code == -signal.SIGTERM else code


def model_card(port: int) -> dict[str, Any]:
    """The service's ``/v1/model`` card (it says whether the model is scored on the event loop
    or in the thread pool, which the service decides from timings at start-up)."""
    from urllib.request import urlopen

    with urlopen(f"http://{HOST}:{port}/v1/model", timeout=30) as resp:  # noqa: S310 - loopback
        return cast(dict[str, Any], json.loads(resp.read()))


# ---------------------------------------------------------------------- HTTP client
async def _one_request(port: int, raw: bytes) -> int:
    conn = await _connect(port)
    try:
        return await conn.request(raw)
    finally:
        if conn.transport is not None:
            conn.transport.close()


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()


def post_json(path: str, payload: Any) -> bytes:
    body = json.dumps(payload).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@dataclass
class Result:
    name: str
    concurrency: int
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0

    service_cpu: float = float("nan")
    client_cpu: float = float("nan")
    machine_cpu: float = float("nan")
    load_1min: float = float("nan")

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies) * 1e3
        n = len(self.latencies) + self.errors
        pct = (np.percentile(lat, [50, 95, 99]).tolist() if len(lat) else [float("nan")] * 3)
        return {"endpoint": self.name, "requests": n, "concurrency": self.concurrency,
                "errors": self.errors, "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "seconds": self.seconds, "throughput_rps": n / self.seconds if self.seconds else 0.0,
                "p50_ms": pct[0], "p95_ms": pct[1], "p99_ms": pct[2],
                "max_ms": float(lat.max()) if len(lat) else float("nan"),
                "service_cpu_ms_per_request": self.service_cpu * 1e3 / n if n else float("nan"),
                "service_cores": self.service_cpu / self.seconds if self.seconds else float("nan"),
                "client_cores": self.client_cpu / self.seconds if self.seconds else float("nan"),
                "other_cores": (max(self.machine_cpu - self.service_cpu - self.client_cpu, 0.0)
                                / self.seconds if self.seconds else float("nan")),
                "load_1min_after": self.load_1min,
                "client_cpu_ms_per_request": self.client_cpu * 1e3 / n if n else float("nan")}


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection sending one request at a time: the response is parsed
    from the bytes as they arrive (status line, ``Content-Length``), without stream readers."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def request(self, raw: bytes) -> asyncio.Future[int]:
        """Send ``raw``; the future gets the response's status once its body has arrived."""
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        if self.closed:
            self.waiter.set_exception(ConnectionResetError("the service closed the connection"))
        else:
            self.transport.write(raw)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None or self.waiter.done():
            return
        head = bytes(self.buffer[:end]).split(b"\r\n")
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":  # the service always sends Content-Length
                self.waiter.set_exception(ValueError("chunked responses are not supported"))
                return
        if len(self.buffer) < end + 4 + length:
            return
        del self.buffer[:end + 4 + length]
        try:
            self.waiter.set_result(int(head[0].split(b" ", 2)[1]))
        except (IndexError, ValueError) as exc:
            self.waiter.set_exception(ValueError(f"bad status line {head[0]!r}: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionResetError("connection closed mid-response"))


async def _connect(port: int) -> _Connection:
    _, conn = await asyncio.get_running_loop().create_connection(_Connection, HOST, port)
    return conn


async def drive(port: int, name: str, requests: list[bytes], concurrency: int) -> Result:
    """Send every request once, ``concurrency`` at a time (one keep-alive connection each)."""
    result = Result(name, concurrency)
    todo = iter(range(len(requests)))
    clock = time.perf_counter

    async def client() -> None:
        conn = await _connect(port)
        try:
            for i in todo:
                start = clock()
                try:
                    status = await conn.request(requests[i])
                except (OSError, ValueError):
                    result.errors += 1
                    if conn.transport is not None:
                        conn.transport.close()
                    conn = await _connect(port)
                    continue
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if 200 <= status < 300:
                    result.latencies.append(clock() - start)
                else:
                    result.errors += 1
        finally:
            if conn.transport is not None:
                conn.transport.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - start
    return result


async def stall(port: int, gets: list[bytes], big: bytes, posters: int,
                seconds: float) -> tuple[Result, Result]:
    """``gets`` one at a time on one connection (for at most ``seconds``) while ``posters``
    other connections post ``big`` (a fold-in from 10,000 ratings) without pause: what one
    client's heavy requests cost the others. Returns the GET and the POST results."""
    got = Result(f"GET /v1/recommend/{{user}} beside {posters} big fold-ins", 1)
    folds = Result("POST /v1/recommend (10,000 ratings)", posters)
    clock = time.perf_counter
    stop = asyncio.Event()

    async def record(res: Result, conn: _Connection, raw: bytes) -> _Connection:
        start = clock()
        try:
            status = await conn.request(raw)
        except (OSError, ValueError):
            res.errors += 1
            if conn.transport is not None:
                conn.transport.close()
            return await _connect(port)
        res.statuses[status] = res.statuses.get(status, 0) + 1
        if 200 <= status < 300:
            res.latencies.append(clock() - start)
        else:
            res.errors += 1
        return conn

    async def poster() -> None:
        conn = await _connect(port)
        while not stop.is_set():
            conn = await record(folds, conn, big)
        if conn.transport is not None:
            conn.transport.close()

    tasks = [asyncio.ensure_future(poster()) for _ in range(posters)]
    await asyncio.sleep(1.0)  # every poster has a fold-in in flight
    start = clock()
    conn = await _connect(port)
    for raw in gets:
        conn = await record(got, conn, raw)
        if clock() - start > seconds:
            break
    got.seconds = folds.seconds = clock() - start
    stop.set()
    await asyncio.gather(*tasks)
    if conn.transport is not None:
        conn.transport.close()
    return got, folds


def big_fold_in(model_dir: Path, n: int = 10_000, seed: int = 0) -> bytes:
    """A fold-in request from ``n`` ratings of random known items (repeats allowed)."""
    from cfrec.models.base import Recommender

    model = Recommender.load(model_dir)
    rng = np.random.default_rng(seed)
    items = model.item_map_.to_list()
    picks = rng.integers(0, len(items), n).tolist()
    stars = rng.integers(1, 6, n).tolist()
    return post_json("/v1/recommend", {"ratings": [{"item": items[i], "rating": float(r)}
                                                   for i, r in zip(picks, stars, strict=True)],
                                       "k": 10})


def run_async(coro: Any) -> Any:
    """``asyncio.run`` on uvloop when it is installed (a cheaper event loop for the client too)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


# ---------------------------------------------------------------------- scenarios
def scenarios(model_dir: Path, n: int, n_post: int, seed: int) -> dict[str, list[bytes]]:
    """Request lists per endpoint: random known users, random 5-rating new users, similar items
    and title searches, all drawn with ``seed``."""
    from urllib.parse import quote

    from cfrec.catalog import Catalog
    from cfrec.models.base import Recommender

    model = Recommender.load(model_dir)
    catalog = Catalog.from_model(model)
    rng = np.random.default_rng(seed)
    users = model.user_map_.to_list()
    lo, hi = model.rating_scale_
    popular = catalog.popular(min(500, len(catalog)))
    out: dict[str, list[bytes]] = {}
    picks = rng.integers(0, len(users), n)
    out["GET /v1/recommend/{user}"] = [get(f"/v1/recommend/{quote(str(users[u]))}?k=10") for u in picks.tolist()]
    posts = []
    for _ in range(n_post):
        items = rng.choice(popular, size=min(5, len(popular)), replace=False)
        stars = rng.integers(1, 6, len(items))
        ratings = lo + (stars - 1) * (hi - lo) / 4
        posts.append(post_json("/v1/recommend", {
            "ratings": [{"item": catalog.raw_id(i), "rating": float(r)}
                        for i, r in zip(items.tolist(), ratings.tolist(), strict=True)], "k": 10}))
    out["POST /v1/recommend (5 ratings)"] = posts
    sims = rng.choice(popular, size=n_post)
    out["GET /v1/similar/{item}"] = [get(f"/v1/similar/{quote(str(catalog.raw_id(i)))}?k=10")
                                     for i in sims.tolist()]
    if catalog.has_titles:
        words = [(catalog.title(i) or "").split(" (")[0].split()[0] for i in popular[:200].tolist()]
        queries = rng.choice(np.asarray(words, dtype=object), size=n_post)
        out["GET /v1/items?q="] = [get(f"/v1/items?q={quote(str(q))}&limit=20") for q in queries.tolist()]
    return out


def service_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by the service and its worker processes."""
    try:
        import psutil
    except ImportError:  # Linux without psutil: the main process alone
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def machine_cpu_seconds() -> float:
    """CPU seconds all processes of the machine have used (busy time from /proc/stat; NaN
    where there is none): with the service's and this client's own, what other work took."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return float("nan")
    ticks = [int(v) for v in fields]
    busy = sum(ticks) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)  # less idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (f"{'endpoint':<32}{'requests':>9}{'conc':>5}{'errors':>7}{'req/s':>7}{'p50 ms':>8}"
            f"{'p95 ms':>8}{'p99 ms':>8}{'max ms':>8}{'svc ms/req':>11}{'client ms/req':>14}"
            f"{'cores: svc':>11}{'client':>7}{'other':>6}{'load':>6}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['endpoint']:<32}{r['requests']:>9}{r['concurrency']:>5}{r['errors']:>7}"
              f"{r['throughput_rps']:>7.0f}{r['p50_ms']:>8.2f}{r['p95_ms']:>8.2f}{r['p99_ms']:>8.2f}"
              f"{r['max_ms']:>8.1f}{r['service_cpu_ms_per_request']:>11.3f}"
              f"{r['client_cpu_ms_per_request']:>14.3f}{r['service_cores']:>11.2f}"
              f"{r['client_cores']:>7.2f}{r['other_cores']:>6.2f}{r['load_1min_after']:>6.2f}")
    print("svc/client ms/req: CPU time (user + system) per request of the service (all its "
          "processes) and of this load generator;\ncores: CPU cores busy on average during the "
          "run, for the service, this client and everything else on the machine;\nload: the "
          "1-minute load average at the end of the run.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", type=Path, help="model folder to serve")
    src.add_argument("--build", choices=["mf-ml100k", "ials-ml1m"], help="train this model first")
    parser.add_argument("--requests", type=int, default=20_000, help="GET /v1/recommend requests")
    parser.add_argument("--other-requests", type=int, default=5_000,
                        help="requests for each other endpoint (POST /v1/recommend, similar, search)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=500, help="uncounted requests first")
    parser.add_argument("--workers", type=int, default=1, help="service worker processes")
    parser.add_argument("--no-access-log", action="store_true", help="serve without access log lines")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--stall", type=int, default=0, metavar="N",
                        help="also: GET latency of one client (--stall-requests GETs, one at a "
                             "time) alone, then beside N clients posting 10,000-rating fold-ins")
    parser.add_argument("--stall-requests", type=int, default=1000)
    parser.add_argument("--stall-seconds", type=float, default=30.0,
                        help="at most this long for the GETs beside the fold-ins")
    parser.add_argument("--only-stall", action="store_true", help="skip the endpoint scenarios")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="cfrec-serve-load-") as tmp:
        tmp_path = Path(tmp)
        if args.build:
            t0 = time.perf_counter()
            model_dir = build_model(args.build, tmp_path / "model", seed=args.seed)
            print(f"trained {args.build} in {time.perf_counter() - t0:.1f} s", flush=True)
        else:
            model_dir = args.model
        plan = scenarios(model_dir, args.requests, args.other_requests, args.seed)
        port = free_port()
        log_path = tmp_path / "service.log"
        proc = start_service(model_dir, port, log_path, args.workers, not args.no_access_log)
        rows: list[dict[str, Any]] = []
        scoring = "?"
        load_before = os.getloadavg()
        try:
            t0 = time.perf_counter()
            wait_ready(port, proc)
            scoring = model_card(port).get("scoring", "?")
            print(f"service ready on {HOST}:{port} after {time.perf_counter() - t0:.1f} s "
                  f"({args.workers} worker(s), access log {'off' if args.no_access_log else 'on'}, "
                  f"scoring on the {scoring})", flush=True)
            first = next(iter(plan.values()))
            run_async(drive(port, "warmup", first[:args.warmup], args.concurrency))
            for name, reqs in ({} if args.only_stall else plan).items():
                cpu0, own0 = service_cpu_seconds(proc.pid), time.process_time()
                all0 = machine_cpu_seconds()
                res = run_async(drive(port, name, reqs, args.concurrency))
                res.service_cpu = service_cpu_seconds(proc.pid) - cpu0
                res.client_cpu = time.process_time() - own0
                res.machine_cpu = machine_cpu_seconds() - all0
                res.load_1min = os.getloadavg()[0]
                rows.append(res.summary())
                print(f"  {name}: {rows[-1]['throughput_rps']:.0f} req/s, p99 {rows[-1]['p99_ms']:.1f} ms, "
                      f"{rows[-1]['errors']} errors", flush=True)
            if args.stall:
                gets = first[:args.stall_requests]
                alone = run_async(drive(port, "GET /v1/recommend/{user} alone", gets, 1))
                beside, folds = run_async(stall(port, gets, big_fold_in(model_dir), args.stall,
                                                args.stall_seconds))
                for res in (alone, beside, folds):
                    rows.append(res.summary())
                    print(f"  {res.name}: p50 {rows[-1]['p50_ms']:.1f} ms, p99 "
                          f"{rows[-1]['p99_ms']:.1f} ms, {rows[-1]['requests']} requests, "
                          f"{rows[-1]['errors']} errors {rows[-1]['statuses']}", flush=True)
        finally:
            load_after = os.getloadavg()
            code = stop_service(proc)
            log_tail = log_path.read_text(errors="replace").splitlines()[-5:]
        print()
        print_table(rows)
        print(f"\nload average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/"
              f"{load_before[2]:.2f}, after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f} "
              f"on {os.cpu_count()} CPUs; service exit status {code}")
        if code != 0:
            print("service log tail:\n" + "\n".join(log_tail))
        if args.json:
            args.json.write_text(json.dumps({
                "model": str(args.model or args.build), "workers": args.workers, "scoring": scoring,
                "access_log": not args.no_access_log, "load_before": load_before,
                "load_after": load_after, "cpus": os.cpu_count(), "results": rows}, indent=2))
    total_errors = sum(r["errors"] for r in rows)
    return 1 if total_errors or code != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
