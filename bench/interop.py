#!/usr/bin/env python3
"""bench/interop.py: the parts of bench/interop.sh that are easier in Python (stdlib only).

  interop.py body FILE SIZE SEED
      Writes SIZE pseudo-random bytes (random.Random(SEED), so every run sends the same body)
      to FILE and prints their FNV-1a 64-bit hash as the demo app spells it (16 hex digits).
  interop.py pattern-sha256 LENGTH
      Prints the sha256 of what the demo app answers to ?bytes=LENGTH: `0123456789abcdef`
      repeated, cut at LENGTH.
  interop.py cgi-fcgi SOCKET METHOD URI HEAD_OUT BODY_OUT [--body FILE] [--timeout S]
      One request through `cgi-fcgi -bind -connect SOCKET` (Debian's libfcgi-bin), the way a
      CGI-speaking web server would run it: the CGI variables in a clean environment, the body
      on stdin. Writes the response head as an HTTP one ("HTTP/1.1 NNN", then the headers
      the app sent, Status: included) to HEAD_OUT and the body to BODY_OUT, like curl -D/-o,
      so bench/interop.sh checks both kinds of peer alike. Prints the status (000 when the
      output has no header block); exits with cgi-fcgi's status (124 on timeout).
  interop.py load PORT [--clients 200] [--requests 5000] [--hang 10] [--limit 120]
      The load: CLIENTS HTTP/1.1 keep-alive clients on 127.0.0.1:PORT share REQUESTS GETs of
      /interop/load?n=I (I = 0, 1, ...), one at a time per connection. Each answer must carry
      a status (read leniently: `HTTP/1.1 200`, with no SP after the code, counts as 200; how
      many did is reported) and, when 2xx, the demo page for its own request (`uri:
      /interop/load?n=I`: an answer meant for another request counts as wrong). A request
      with no complete answer within HANG seconds is hung (its connection is closed, the
      client goes on with a new one). A request that finds its reused connection closed
      before a byte of the answer is retried once on a new one, as browsers do (counted as
      retried); any other failure is an error. Prints one line of key=value counts: ok
      non2xx errors hung wrong retried unstarted no_sp rps, then up to 3 error samples.
      (Not h2load: nghttp2 1.52's h2load records no status for a status line without a
      reason phrase, `HTTP/1.1 200 ` included, and counts every such answer as failed.)
"""

import asyncio
import re
import time

import hashlib
import os
import random
import subprocess
import sys

PATTERN = b"0123456789abcdef"


def fnv1a64(data: bytes) -> int:
    value = 0xCBF29CE484222325
    for byte in data:
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


def body(path: str, size: int, seed: int) -> None:
    data = random.Random(seed).randbytes(size)
    with open(path, "wb") as out:
        out.write(data)
    print(f"{fnv1a64(data):016x}")


def pattern_sha256(length: int) -> None:
    digest = hashlib.sha256()
    whole, rest = divmod(length, len(PATTERN))
    chunk = PATTERN * 4096
    for _ in range(whole // 4096):
        digest.update(chunk)
    digest.update(PATTERN * (whole % 4096) + PATTERN[:rest])
    print(digest.hexdigest())


def cgi_fcgi(args: list) -> int:
    socket, method, uri, head_out, body_out = args[:5]
    options = dict(zip(args[5::2], args[6::2]))
    body_file = options.get("--body")
    timeout = float(options.get("--timeout", "20"))
    path, _, query = uri.partition("?")
    data = b""
    if body_file:
        with open(body_file, "rb") as f:
            data = f.read()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_SOFTWARE": "bench/interop.py",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "40000",
        "REQUEST_METHOD": method,
        "REQUEST_URI": uri,
        "SCRIPT_NAME": path,
        "PATH_INFO": "",
        "QUERY_STRING": query,
        "CONTENT_LENGTH": str(len(data)) if body_file else "",
        "CONTENT_TYPE": "application/octet-stream" if body_file else "",
        "HTTP_HOST": "127.0.0.1",
    }
    try:
        run = subprocess.run(["cgi-fcgi", "-bind", "-connect", socket], input=data, env=env,
                             capture_output=True, timeout=timeout, check=False)
        output, code = run.stdout, run.returncode
        if run.stderr:
            sys.stderr.write(run.stderr.decode("utf-8", "replace"))
    except subprocess.TimeoutExpired as expired:
        output, code = expired.stdout or b"", 124
    status, head, rest = "000", b"", output
    for separator in (b"\r\n\r\n", b"\n\n"):
        if separator in output:
            head, _, rest = output.partition(separator)
            status = "200"
            break
    lines = head.replace(b"\r\n", b"\n").split(b"\n") if head else []
    for line in lines:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"status":
            status = value.strip().split(b" ")[0].decode("ascii", "replace")
    with open(head_out, "wb") as out:
        out.write(f"HTTP/1.1 {status}\r\n".encode() + b"".join(l + b"\r\n" for l in lines) + b"\r\n")
    with open(body_out, "wb") as out:
        out.write(rest)
    print(status)
    return code


STATUS_LINE = re.compile(rb"^HTTP/1\.[01] ([0-9]{3})( .*)?$")


class Stale(Exception):
    """The server had closed the reused connection before a byte of the answer."""


async def read_answer(reader):
    """Reads one response; returns (status, no_sp, body, keep)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as error:
        if not error.partial:
            raise Stale() from None
        raise ConnectionError(f"closed after {len(error.partial)} bytes of the head") from None
    lines = head[:-4].split(b"\r\n")
    match = STATUS_LINE.match(lines[0])
    if not match:
        raise ValueError(f"bad status line {lines[0][:60]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip().lower()
    keep = headers.get(b"connection") != b"close"
    if b"chunked" in headers.get(b"transfer-encoding", b""):
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(parts)
    elif b"content-length" in headers:
        body = await reader.readexactly(int(headers[b"content-length"]))
    else:
        body, keep = await reader.read(), False
    return int(match.group(1)), match.group(2) is None, body, keep


async def load(port: int, clients: int, requests: int, hang: float, limit: float) -> None:
    counts = dict.fromkeys(["ok", "non2xx", "errors", "hung", "wrong", "retried", "no_sp"], 0)
    samples = []
    issued = 0

    def error(kind, text):
        counts[kind] += 1
        if len(samples) < 3:
            samples.append(f"{kind}: {text}")

    async def client():
        nonlocal issued
        reader = writer = None
        used = False
        while issued < requests:
            n = issued
            issued += 1
            request = (f"GET /interop/load?n={n} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                       "User-Agent: bench/interop.py\r\n\r\n").encode()
            for attempt in (1, 2):
                try:
                    if writer is None:
                        reader, writer = await asyncio.wait_for(
                            asyncio.open_connection("127.0.0.1", port), hang)
                        used = False
                    writer.write(request)
                    status, no_sp, body, keep = await asyncio.wait_for(read_answer(reader), hang)
                except Stale:
                    writer.close()
                    writer = None
                    if used and attempt == 1:
                        counts["retried"] += 1
                        continue
                    error("errors", f"request {n}: connection closed before an answer")
                    break
                except asyncio.TimeoutError:
                    if writer:
                        writer.close()
                    writer = None
                    error("hung", f"request {n}: no complete answer in {hang:g} s")
                    break
                except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
                    if writer:
                        writer.close()
                    writer = None
                    error("errors", f"request {n}: {type(e).__name__}: {e}")
                    break
                used = True
                counts["no_sp"] += no_sp
                if not 200 <= status < 300:
                    error("non2xx", f"request {n}: status {status}")
                elif f"uri: /interop/load?n={n}\n".encode() not in body:
                    error("wrong", f"request {n}: got {body[:160]!r}")
                else:
                    counts["ok"] += 1
                if not keep:
                    writer.close()
                    writer = None
                break
        if writer:
            writer.close()

    started = time.monotonic()
    tasks = [asyncio.ensure_future(client()) for _ in range(clients)]
    done, pending = await asyncio.wait(tasks, timeout=limit)
    for task in pending:
        task.cancel()
    for task in done:
        if task.exception():
            error("errors", f"client crashed: {task.exception()!r}")
    elapsed = time.monotonic() - started
    answered = sum(counts[k] for k in ("ok", "non2xx", "wrong"))
    counts["unstarted"] = requests - issued
    counts["rps"] = round(answered / elapsed) if elapsed else 0
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
    for sample in samples:
        print(sample)


def main() -> int:
    if len(sys.argv) >= 5 and sys.argv[1] == "body":
        body(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif len(sys.argv) == 3 and sys.argv[1] == "pattern-sha256":
        pattern_sha256(int(sys.argv[2]))
    elif len(sys.argv) >= 7 and sys.argv[1] == "cgi-fcgi":
        return cgi_fcgi(sys.argv[2:])
    elif len(sys.argv) >= 3 and sys.argv[1] == "load":
        options = dict(zip(sys.argv[3::2], sys.argv[4::2]))
        asyncio.run(load(int(sys.argv[2]), int(options.get("--clients", 200)),
                         int(options.get("--requests", 5000)), float(options.get("--hang", 10)),
                         float(options.get("--limit", 120))))
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
