#!/usr/bin/env python3
"""The guestbook's backend: a small HTTP JSON API that keeps entries in Redis.

    GET  /api/entries[?limit=N]  -> {"entries": [{"id", "text", "time", "by"}...], "version", "pod"}
                                    (all entries, oldest first; the last N with limit)
    POST /api/entries            <- {"text": "..."} (JSON) or text=... (form)
                                 -> 201 {"entry": {...}, "version", "pod"}
    GET  /healthz                -> 200 "ok" (readiness: the process serves; Redis is not asked,
                                    so a Redis restart does not take every backend out at once)

Every response carries `X-Guestbook-Version` (the image's GUESTBOOK_VERSION) and
`X-Guestbook-Pod` (the pod's hostname). Settings come from the environment: REDIS_HOST,
REDIS_PORT (a ConfigMap), REDIS_PASSWORD (a Secret), PORT (default 8080).

Only the standard library: http.server and a minimal RESP (Redis protocol) client, one
connection per request, so a Redis pod that moves is found again by name at once. On SIGTERM
the server stops accepting, finishes the requests in flight, closes the kept-alive connections
that wait for a next request (a proxy's pool would otherwise hold it up until SIGKILL) and
exits.
"""
import json
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

VERSION = os.environ.get("GUESTBOOK_VERSION", "dev")
POD = socket.gethostname()
REDIS_HOST = os.environ.get("REDIS_HOST", "redis")
REDIS_PORT = int(os.environ.get("REDIS_PORT", "6379"))
REDIS_PASSWORD = os.environ.get("REDIS_PASSWORD", "")
PORT = int(os.environ.get("PORT", "8080"))
KEY_LIST = "guestbook:entries"
KEY_NEXT = "guestbook:next-id"
MAX_TEXT = 500


class RedisError(Exception):
    """An error reply from Redis, or a connection that failed."""


class Redis:
    """One connection to Redis speaking RESP2; use as a context manager."""

    def __init__(self):
        self.sock = socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=5)
        self.buf = self.sock.makefile("rb")
        if REDIS_PASSWORD:
            self.call("AUTH", REDIS_PASSWORD)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.buf.close()
        self.sock.close()

    def call(self, *args):
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(parts))
        return self.reply()

    def reply(self):
        line = self.buf.readline()
        if not line.endswith(b"\r\n"):
            raise RedisError("connection closed by Redis")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.buf.read(n + 2)
            if len(data) != n + 2:
                raise RedisError("connection closed by Redis")
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise RedisError("unexpected reply %r" % line)


class Handler(BaseHTTPRequestHandler):
    server_version = "guestbook-backend/" + VERSION
    protocol_version = "HTTP/1.1"

    def handle(self):
        """Serves requests on the connection until the client closes it or the server stops;
        while it waits for a request, the connection is in server.idle for stop() to close."""
        self.close_connection = True
        while True:
            with self.server.lock:
                if self.server.stopping:
                    return
                self.server.idle.add(self.connection)
            try:
                self.handle_one_request()
            finally:
                with self.server.lock:
                    self.server.idle.discard(self.connection)
            if self.close_connection:
                return

    def parse_request(self):
        with self.server.lock:  # a request arrived: no longer idle
            self.server.idle.discard(self.connection)
        return super().parse_request()

    def log_message(self, fmt, *args):
        sys.stdout.write("%s %s\n" % (self.address_string(), fmt % args))
        sys.stdout.flush()

    def send_json(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Guestbook-Version", VERSION)
        self.send_header("X-Guestbook-Pod", POD)
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def error(self, code, message):
        self.send_json(code, {"error": message, "version": VERSION, "pod": POD})

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/healthz":
            body = b"ok\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if url.path != "/api/entries":
            return self.error(404, "not found")
        try:
            limit = int(parse_qs(url.query).get("limit", ["0"])[0])
        except ValueError:
            return self.error(400, "limit must be a number")
        start = -limit if limit > 0 else 0
        try:
            with Redis() as r:
                raw = r.call("LRANGE", KEY_LIST, start, -1)
        except (OSError, RedisError) as e:
            return self.error(503, "redis: %s" % e)
        entries = [json.loads(x) for x in raw]
        self.send_json(200, {"entries": entries, "version": VERSION, "pod": POD})

    def do_POST(self):
        if urlsplit(self.path).path != "/api/entries":
            return self.error(404, "not found")
        try:
            n = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            return self.error(400, "bad Content-Length")
        if n > 64 * 1024:
            return self.error(413, "entry too large")
        raw = self.rfile.read(n)
        ctype = self.headers.get("Content-Type", "")
        try:
            if ctype.startswith("application/x-www-form-urlencoded"):
                text = parse_qs(raw.decode()).get("text", [""])[0]
            else:
                text = json.loads(raw or b"{}").get("text", "")
        except (ValueError, AttributeError, UnicodeDecodeError):
            return self.error(400, "send JSON {\"text\": \"...\"}")
        if not isinstance(text, str) or not text.strip():
            return self.error(400, "text must be a non-empty string")
        if len(text) > MAX_TEXT:
            return self.error(400, "text is longer than %d characters" % MAX_TEXT)
        try:
            with Redis() as r:
                entry = {"id": r.call("INCR", KEY_NEXT), "text": text.strip(),
                         "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "by": POD}
                r.call("RPUSH", KEY_LIST, json.dumps(entry))
        except (OSError, RedisError) as e:
            return self.error(503, "redis: %s" % e)
        self.send_json(201, {"entry": entry, "version": VERSION, "pod": POD})


class Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for the requests in flight
    block_on_close = True

    def __init__(self, address, handler):
        super().__init__(address, handler)
        self.lock = threading.Lock()
        self.stopping = False
        self.idle = set()  # connections waiting for their next request

    def stop(self):
        """Stops accepting, then closes the idle connections (busy ones close after their
        response)."""
        self.shutdown()
        with self.lock:
            self.stopping = True
            idle = list(self.idle)
        for sock in idle:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main():
    server = Server(("", PORT), Handler)

    def stop(signum, _frame):
        print("signal %d: finishing the requests in flight" % signum, flush=True)
        threading.Thread(target=server.stop).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("guestbook backend %s on :%d, redis %s:%d" % (VERSION, PORT, REDIS_HOST, REDIS_PORT),
          flush=True)
    server.serve_forever()
    server.server_close()
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
