"""flup's FastCGI server with a WSGI app: `python3 flup_app.py LISTEN [multiplexed]` where LISTEN
is a unix socket path or "host:port". Every answer is a one-item list, for which flup adds a
Content-Length itself (fcgi_base.py's write()); it sends END_REQUEST after the body."""
import hashlib
import sys
from urllib.parse import parse_qs

from flup.server.fcgi import WSGIServer


def app(environ, start_response):
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    op = query.get("op")
    if op == "echo":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"echo: {query['word']}\n".encode()]
    if op == "hash":
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"length: {len(body)}\nmd5: {hashlib.md5(body).hexdigest()}\n".encode()]
    if op == "big":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return ["".join("%015d\n" % i for i in range(int(query["lines"]))).encode()]
    start_response("418 I'm a teapot", [("X-Interop", "flup"), ("Content-Type", "text/plain")])
    return [b"teapot\n"]


listen = sys.argv[1]
host, _, port = listen.rpartition(":")
bind = (host, int(port)) if port.isdigit() and not listen.startswith("/") else listen
WSGIServer(app, bindAddress=bind, multiplexed=sys.argv[2:] == ["multiplexed"]).run()
