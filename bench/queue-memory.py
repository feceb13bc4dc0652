#!/usr/bin/env python3
"""What N queued requests (and N idle client connections) cost fcgate in resident memory.

Driven by bench/queue-memory.sh, stdlib only. Two subcommands:

  backend SOCKET      a FastCGI "backend" on a unix socket that accepts connections, reads
                      whatever arrives and never answers: every request fcgate sends it stays
                      in flight, so with --max-conns 1 everything after the first one queues.
  measure ...         for each N: one fresh fcgate with N idle client connections (connected,
                      nothing sent), another with N connections that each sent one GET (queued),
                      and one in front of the demo app with N keep-alive connections that each
                      got one answer and stay open; fcgate's VmRSS before and under load; a
                      markdown table on stdout, progress on stderr.

Child processes stay in this process's process group, so the calling script ends them all
with one signal to the group; they are also ended here on the way out.
"""

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

REQUEST = b"GET /queued HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: queue-memory\r\n\r\n"
# The HTTP/2 client preface and an empty SETTINGS frame: an idle h2 connection.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"
CONNECT_CONCURRENCY = 200  # stays under fcgate's listen backlog: no SYN retransmit stalls
CONNECT_TIMEOUT_S = 10.0
OPEN_PHASE_TIMEOUT_S = 180.0
STABLE_DELTA_KIB = 64
STABLE_POLL_S = 0.5
STABLE_POLL_LIMIT_S = 15.0
# fcgate parks an idle HTTP/1.1 connection (drops hyper's buffers) 100 ms after its last response
# (client_connection::PARK_AFTER); keep-alive connections are measured well after that.
PARK_SETTLE_S = 2.5


def log(message):
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# The silent backend


async def serve_silently(path):
    async def swallow(reader, writer):
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass
        writer.close()

    server = await asyncio.start_unix_server(swallow, path=path, backlog=4096)
    async with server:
        await server.serve_forever()


def run_backend(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    asyncio.run(serve_silently(path))


# ---------------------------------------------------------------------------------------
# fcgate and its memory


def status_kib(pid, field):
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def vm_rss_kib(pid):
    return status_kib(pid, "VmRSS")


def settled_rss_kib(pid):
    """VmRSS once two readings STABLE_POLL_S apart differ by less than STABLE_DELTA_KIB."""
    previous = vm_rss_kib(pid)
    deadline = time.monotonic() + STABLE_POLL_LIMIT_S
    while time.monotonic() < deadline:
        time.sleep(STABLE_POLL_S)
        current = vm_rss_kib(pid)
        if abs(current - previous) < STABLE_DELTA_KIB:
            return current
        previous = current
    log(f"warning: fcgate's RSS still moving after {STABLE_POLL_LIMIT_S:.0f} s; taking {previous} KiB")
    return previous


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}")


def accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Gateway:
    """One fcgate process (and its silent backend) for one measurement, ended on exit."""

    def __init__(self, args, label, answering=False):
        self.args = args
        self.answering = answering
        self.socket_path = os.path.join(args.work, f"backend-{label}.sock")
        self.port = free_port()
        self.log_path = os.path.join(args.work, f"fcgate-{label}.log")
        self.backend = None
        self.fcgate = None

    def __enter__(self):
        if self.answering:
            backend = [self.args.fcgate, "demo-app", "--listen", f"unix:{self.socket_path}"]
        else:
            backend = [sys.executable, os.path.abspath(__file__), "backend", self.socket_path]
        self.backend = subprocess.Popen(backend, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        wait_until(lambda: os.path.exists(self.socket_path), 10, "the backend's socket")
        # The connection cap (half of ulimit -n by default) must not close what is measured.
        config_path = os.path.join(self.args.work, "fcgate.toml")
        with open(config_path, "w") as config:
            config.write("max_client_connections = 1000000\naccess_log = \"off\"\n")
        command = [
            self.args.fcgate,
            "--config", config_path,
            "--listen", f"127.0.0.1:{self.port}",
            "--upstream", f"unix:{self.socket_path}",
            "--max-conns", "1",
            "--queue-timeout", "120s",
            "--max-queue", "20000",
            # Nothing below may end a connection while it is being measured.
            "--read-timeout", "300s",
            "--client-header-timeout", "120s",
        ]
        with open(self.log_path, "wb") as log_file:
            self.fcgate = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            )
        wait_until(lambda: accepts(self.port) or self.fcgate.poll() is not None, 10, "fcgate")
        if self.fcgate.poll() is not None:
            raise RuntimeError(f"fcgate exited with {self.fcgate.returncode}; see {self.log_path}")
        return self

    def __exit__(self, *exc):
        for process in (self.fcgate, self.backend):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
        return False


# ---------------------------------------------------------------------------------------
# The clients


class Clients:
    """N client connections to fcgate. send: "" connects only, "queue" writes one GET and
    waits, "keepalive" writes one GET, reads the whole answer and keeps the connection open,
    "h2" writes the HTTP/2 preface and an empty SETTINGS frame and stays idle."""

    def __init__(self, port, count, send):
        self.port = port
        self.count = count
        self.send = send
        self.writers = []
        self.failed = 0
        self.answered = 0  # got bytes back (a 503, say): not queued
        self.closed = 0  # fcgate closed the connection: not queued either
        self.watchers = []

    async def open_all(self):
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def open_one():
            async with gate:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.port), CONNECT_TIMEOUT_S
                )
                if self.send == "h2":
                    writer.write(H2_PREFACE)
                    await asyncio.wait_for(writer.drain(), CONNECT_TIMEOUT_S)
                elif self.send:
                    writer.write(REQUEST)
                    await asyncio.wait_for(writer.drain(), CONNECT_TIMEOUT_S)
                if self.send == "keepalive":
                    await asyncio.wait_for(self.read_answer(reader), CONNECT_TIMEOUT_S)
                self.writers.append(writer)
                self.watchers.append(asyncio.create_task(self.watch(reader)))

        outcomes = await asyncio.gather(*(open_one() for _ in range(self.count)), return_exceptions=True)
        errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        self.failed = len(errors)
        if errors:
            log(f"{len(errors)} connections failed, first: {errors[0]!r}")

    async def read_answer(self, reader):
        # fcgate sends Content-Length when the whole answer was in before the head went out,
        # chunked otherwise (the demo app's answer can arrive in two reads under load).
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        chunked = False
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            await reader.readuntil(b"0\r\n\r\n")
        else:
            await reader.readexactly(length)

    async def watch(self, reader):
        try:
            data = await reader.read(1)
            # An h2 server speaks first (its SETTINGS): only the end of the stream counts.
            while data and self.send == "h2":
                data = await reader.read(4096)
        except (ConnectionError, OSError):
            data = b""
        if data:
            self.answered += 1
        else:
            self.closed += 1

    async def close_all(self):
        for watcher in self.watchers:
            watcher.cancel()
        for writer in self.writers:
            writer.close()
        await asyncio.gather(*self.watchers, return_exceptions=True)


async def measure_under_load(gateway, count, send):
    clients = Clients(gateway.port, count, send)
    try:
        await asyncio.wait_for(clients.open_all(), OPEN_PHASE_TIMEOUT_S)
        # All connected and written; give fcgate a second to read and queue the requests (or,
        # for keep-alive connections, to park them), then wait (bounded) for its RSS to settle.
        await asyncio.sleep(PARK_SETTLE_S if send in ("keepalive", "h2") else 1.0)
        loaded = await asyncio.get_running_loop().run_in_executor(None, settled_rss_kib, gateway.fcgate.pid)
        await asyncio.sleep(0)  # let watchers that already have data record it
        return loaded, clients
    finally:
        await clients.close_all()


KINDS = {
    "": "idle connections",
    "queue": "queued requests",
    "keepalive": "keep-alive connections",
    "h2": "idle HTTP/2 connections",
}


def measure_once(args, count, send):
    label = f"{send or 'idle'}-{count}"
    with Gateway(args, label, answering=send == "keepalive") as gateway:
        time.sleep(0.5)  # past startup work (GET_VALUES probe, runtime threads)
        before = settled_rss_kib(gateway.fcgate.pid)
        log(f"{label}: fcgate pid {gateway.fcgate.pid} on port {gateway.port}, RSS before {before} KiB")
        started = time.monotonic()
        loaded, clients = asyncio.run(measure_under_load(gateway, count, send))
        if gateway.fcgate.poll() is not None:
            raise RuntimeError(f"fcgate died during {label}; see {gateway.log_path}")
        peak = status_kib(gateway.fcgate.pid, "VmHWM")
        log(f"{label}: opened in {time.monotonic() - started:.1f} s, RSS {loaded} KiB, "
            f"failed {clients.failed}, answered {clients.answered}, closed {clients.closed}")
        return {
            "label": label, "kind": KINDS[send], "n": count,
            "before": before, "loaded": loaded, "peak": peak, "failed": clients.failed,
            "answered": clients.answered, "closed": clients.closed,
        }


def per_item_bytes(row):
    held = row["n"] - row["failed"] - row["answered"] - row["closed"]
    return (row["loaded"] - row["before"]) * 1024 / held if held > 0 else float("nan")


def print_table(rows):
    print("| N | load | fcgate RSS before, KiB | RSS under load, KiB | delta, KiB | bytes each |"
          " peak RSS, KiB | failed / answered / closed early |")
    print("|--:|---|--:|--:|--:|--:|--:|---|")
    for row in rows:
        print(f"| {row['n']} | {row['kind']} | {row['before']} | {row['loaded']} |"
              f" {row['loaded'] - row['before']} | {per_item_bytes(row):,.0f} | {row['peak']} |"
              f" {row['failed']} / {row['answered']} / {row['closed']} |")
    marginal_lines = []
    for kind in KINDS.values():
        same = sorted((row for row in rows if row["kind"] == kind), key=lambda row: row["n"])
        if len(same) >= 2 and same[-1]["n"] > same[0]["n"]:
            low, high = same[0], same[-1]
            marginal = (high["loaded"] - high["before"] - (low["loaded"] - low["before"])) * 1024 / (
                high["n"] - low["n"]
            )
            marginal_lines.append(
                f"- Marginal cost, {kind}, N {low['n']} -> {high['n']}: {marginal:,.0f} bytes each."
            )
    if marginal_lines:
        print()
        print("\n".join(marginal_lines))


def run_measure(args):
    counts = [int(value) for value in args.counts.split(",") if value]
    rows = []
    kinds = [kind for kind in args.kinds.split(",") if kind]
    unknown = set(kinds) - {"idle", "queue", "keepalive", "h2"}
    if unknown:
        raise SystemExit(f"unknown --kinds {sorted(unknown)}; choose from idle, queue, keepalive, h2")
    for count in counts:
        for send in (send for send in KINDS if (send or "idle") in kinds):
            rows.append(measure_once(args, count, send))
    print_table(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    backend = commands.add_parser("backend")
    backend.add_argument("socket")
    measure = commands.add_parser("measure")
    measure.add_argument("--fcgate", required=True)
    measure.add_argument("--work", required=True)
    measure.add_argument("--counts", default="1000,10000")
    measure.add_argument("--kinds", default="idle,queue,keepalive,h2")
    args = parser.parse_args()
    # SIGTERM from the calling script's trap: unwind so the Gateway context ends its children.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.command == "backend":
        run_backend(args.socket)
    else:
        run_measure(args)


if __name__ == "__main__":
    main()
