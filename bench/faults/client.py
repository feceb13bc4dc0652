#!/usr/bin/env python3
"""Load for bench/faults.sh that keeps every request's fate, so none can go missing.

    client.py METHOD URL SECONDS CONNECTIONS RESULTS

CONNECTIONS threads each keep one HTTP/1.1 connection and send METHOD URL?id=<thread>-<n> (POST
with a 1 KiB form body) until SECONDS have passed, then wait for the answer to the request in
flight. wrk drops those at the end, which hides a gateway that leaves requests hanging once the
load stops, and a POST the app ran whose answer nobody waited for would look like a lost one.

RESULTS gets one line per request: "<id> <status or error:<kind>> <start, epoch s> <seconds>".
An answer that takes longer than ANSWER_TIMEOUT_SECONDS is recorded as error:timeout.
"""
import http.client
import socket
import sys
import threading
import time
import urllib.parse

BODY = b"payload=" + b"p" * 1024
HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}
# Far beyond what a 1 ms script and the peers' connect/queue timeouts need: a request still
# unanswered after this is hanging.
ANSWER_TIMEOUT_SECONDS = 30


def send(connection, method, path):
    """One request and its whole answer on `connection`; the status code."""
    if method == "POST":
        connection.request(method, path, BODY, HEADERS)
    else:
        connection.request(method, path)
    response = connection.getresponse()
    response.read()
    return response.status, response.will_close


def worker(method, number, url, deadline, outcomes):
    connection = None
    sent = 0
    while time.monotonic() < deadline:
        sent += 1
        request_id = f"{number}-{sent}"
        if connection is None:
            connection = http.client.HTTPConnection(
                url.hostname, url.port, timeout=ANSWER_TIMEOUT_SECONDS
            )
        started, clock = time.time(), time.monotonic()
        try:
            status, will_close = send(connection, method, f"{url.path}?id={request_id}")
            outcome = str(status)
        except (TimeoutError, socket.timeout):
            outcome, will_close = "error:timeout", True
        except (OSError, http.client.HTTPException) as error:
            outcome, will_close = f"error:{type(error).__name__}", True
        outcomes.append(f"{request_id} {outcome} {started:.3f} {time.monotonic() - clock:.3f}")
        if will_close:
            connection.close()
            connection = None
    if connection is not None:
        connection.close()


def main():
    method, url = sys.argv[1], urllib.parse.urlsplit(sys.argv[2])
    seconds, connections, results = float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    deadline = time.monotonic() + seconds
    outcomes = []  # list.append is atomic under the GIL
    threads = [
        threading.Thread(target=worker, args=(method, number, url, deadline, outcomes))
        for number in range(1, connections + 1)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with open(results, "w", encoding="ascii") as out:
        out.write("".join(line + "\n" for line in outcomes))


if __name__ == "__main__":
    main()
