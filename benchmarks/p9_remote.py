"""P9: a second machine warm from a remote tier (Redis, HTTP) over a 20 ms RTT link.

A benchmark program (not a test). Machine 1 type-checks a real project through the store
with the remote configured (write-back). Then, per run, machine 2 - an empty L1 store, a
fresh copy of the tree at another path, a fresh --cache-dir - runs against the same remote
reached through a TCP proxy adding ``--delay-ms`` each way (default 10 ms: a 20 ms round
trip), interleaved with stock mypy's warm run in its own directory (stock, store, ...).
Every output is compared with ``mypy --no-incremental``. Prints, per backend, the median
times, their ratio (issue 15's target: <= 1.5, aim 1.2), the modules re-checked and the
round trips the client made (target <= 10).

redis-server and nginx (WebDAV) are started on free loopback ports in the work directory
and stopped at the end (``apt-get install -y redis-server nginx-light``).

    python benchmarks/p9_remote.py [--package rich] [--version 13.7.1] [--runs 5]
"""

from __future__ import annotations

import argparse
import heapq
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from alternate_releases import checkout as copy_release
from alternate_releases import release_tree, run
from metastore.cli.bench import fresh


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        if proc.poll() is not None:
            sys.exit(f"p9: server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"p9: nothing listens on port {port}")


@contextmanager
def server(kind: str, work: str) -> Iterator[int]:
    port = free_port()
    d = fresh(os.path.join(work, f"{kind}-server"))
    os.makedirs(d)
    if kind == "redis":
        exe = shutil.which("redis-server")
        argv = [exe or "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", d,
                "--save", "", "--appendonly", "no"]
    else:
        exe = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                        else None)
        os.makedirs(os.path.join(d, "data"))
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"daemon off; master_process off; pid {d}/pid; error_log {d}/err warn;\n"
                    "events { worker_connections 128; }\n"
                    f"http {{ access_log off; client_body_temp_path {d}/body;\n"
                    f"server {{ listen 127.0.0.1:{port}; root {d}/data;"
                    " client_max_body_size 0; location / { dav_methods PUT;"
                    " create_full_put_path on; } } }\n")
        argv = [exe or "nginx", "-c", conf, "-p", d, "-e", os.path.join(d, "err")]
    if exe is None:
        sys.exit(f"p9: {kind} not found: apt-get install -y redis-server nginx-light")
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


class LatencyProxy:
    """A loopback TCP proxy delaying every chunk by *delay* seconds in each direction
    (latency without a bandwidth limit: chunks in flight overlap). Daemon threads; they end
    with the connections, the listener with :meth:`close`."""

    def __init__(self, upstream: int, delay: float) -> None:
        self.delay = delay
        self.upstream = upstream
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = int(self.listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.upstream))
            for a, b in ((client, up), (up, client)):
                self._pump(a, b)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        queue: list[tuple[float, int, bytes]] = []
        ready = threading.Condition()
        counter = [0]

        def reader() -> None:
            while True:
                try:
                    data = src.recv(65536)
                except OSError:
                    data = b""
                with ready:
                    counter[0] += 1
                    heapq.heappush(queue, (time.monotonic() + self.delay, counter[0], data))
                    ready.notify()
                if not data:
                    return

        def writer() -> None:
            while True:
                with ready:
                    while not queue:
                        ready.wait()
                    due, _, data = queue[0]
                    now = time.monotonic()
                    if due > now:
                        ready.wait(due - now)
                        continue
                    heapq.heappop(queue)
                if not data:
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    return
                try:
                    dst.sendall(data)
                except OSError:
                    return

        threading.Thread(target=reader, daemon=True).start()
        threading.Thread(target=writer, daemon=True).start()

    def close(self) -> None:
        self.listener.close()


REMOTE_LINE = re.compile(r"remote_round_trips=(\d+)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", default="rich")
    ap.add_argument("--version", default="13.7.1")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--delay-ms", type=float, default=10.0,
                    help="added each way (RTT = 2x); 0: no proxy, plain loopback")
    ap.add_argument("--backends", default="redis,http")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "metastore-p9"))
    args = ap.parse_args()
    pkg = args.package.replace("-", "_")
    work = os.path.abspath(args.workdir)
    tree = release_tree(args.package, args.version, work)
    common = ["--ignore-missing-imports", "-v", pkg]
    for name in [k for k in os.environ if k.startswith("MYPY_METASTORE")]:
        del os.environ[name]
    main_dir = copy_release(tree, os.path.join(work, "main"))
    oracle = run([sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir", os.devnull,
                  "--ignore-missing-imports", pkg], main_dir)
    expected = (oracle[1], oracle[2])
    stock_cache = fresh(os.path.join(work, "stock-cache"))
    run([sys.executable, "-m", "mypy", "--cache-dir", stock_cache, *common], main_dir)
    version = subprocess.run([sys.executable, "-m", "mypy", "--version"],
                             capture_output=True, text=True).stdout.strip()
    link = (f"RTT {2 * args.delay_ms:.0f} ms added by a proxy" if args.delay_ms > 0
            else "plain loopback")
    print(f"{args.package} {args.version}; {version}; {os.cpu_count()} cores; {args.runs} runs;"
          f" {link}")

    for kind in args.backends.split(","):
        with server(kind, work) as port:
            proxy = LatencyProxy(port, args.delay_ms / 1000) if args.delay_ms > 0 else None
            scheme = "redis" if kind == "redis" else "http"
            url = (f"{scheme}://127.0.0.1:{proxy.port if proxy else port}"
                   + ("/0" if kind == "redis" else ""))

            def ours(store: str, cache: str) -> list[str]:
                return [sys.executable, "-m", "metastore.seams.dropin", "--metastore-store",
                        store, "--cache-dir", cache, "--metastore-remote", url,
                        "--metastore-stats", *common]

            t1, out, rc, n1 = run(ours(fresh(os.path.join(work, "m1.db")),
                                       fresh(os.path.join(work, "m1-cache"))), main_dir)
            exact = (out, rc) == expected
            stock_t: list[float] = []
            ours_t: list[float] = []
            ours_n: list[int] = []
            trips: list[int] = []
            for i in range(args.runs):
                t, out, rc, _ = run([sys.executable, "-m", "mypy", "--cache-dir", stock_cache,
                                     *common], main_dir)
                exact = exact and (out, rc) == expected
                stock_t.append(t)
                m2 = copy_release(tree, os.path.join(work, f"m2-{i}", "elsewhere"))
                cmd = ours(fresh(os.path.join(work, f"m2-{i}.db")),
                           fresh(os.path.join(work, f"m2-{i}-cache")))
                t0 = time.perf_counter()
                proc = subprocess.run(cmd, cwd=m2, capture_output=True, text=True)
                ours_t.append(time.perf_counter() - t0)
                exact = exact and (proc.stdout, proc.returncode) == expected
                from alternate_releases import rechecked
                ours_n.append(rechecked(proc.stderr))
                m = REMOTE_LINE.search(proc.stderr)
                trips.append(int(m.group(1)) if m else -1)
                shutil.rmtree(os.path.dirname(m2))
            if proxy is not None:
                proxy.close()
            ms, mo = statistics.median(stock_t), statistics.median(ours_t)
            print(f"P9 {kind}: machine 1 (cold, writes back) {t1:.3f} s, {n1} re-checked; "
                  f"machine 2 (empty L1, tree elsewhere) {mo:.3f} s vs stock warm same dir "
                  f"{ms:.3f} s: ratio {mo / ms:.2f} (target <= 1.5); re-checked "
                  f"{max(ours_n)}; round trips {max(trips)} (target <= 10); exact: {exact}")


if __name__ == "__main__":
    main()
