"""Helpers for the qed eval tests: a scriptable OpenAI-compatible stand-in and a forwarding proxy that can hold
one request (so a test can kill the eval client at a known point without sleeping)."""
import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def last_boxed(text):
    """The inside of the last \\boxed{...}, by brace counting (what NeMo-Skills' extract_answer returns)."""
    i = text.rfind("\\boxed")
    if i < 0 or not text.startswith("\\boxed{", i):
        return None
    depth = 0
    for j in range(i + 6, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 7:j]
    return None


def read_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class _Server:
    def __init__(self, handle):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, payload = handle(self.path, body)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client was killed meanwhile

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        outer.requests = []

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class FakeOpenAI(_Server):
    """Answers chat completions with `reply(request) -> (status, json)` and records every request body."""

    def __init__(self, reply):
        self.lock = threading.Lock()

        def handle(path, body):
            request = json.loads(body)
            with self.lock:
                self.requests.append((path, request))
            status, payload = reply(request)
            return status, json.dumps(payload).encode()

        super().__init__(handle)


class HoldingProxy(_Server):
    """Forwards to `upstream`; the `hold_at`-th request (1-based) waits until release() before it is forwarded."""

    def __init__(self, upstream, hold_at):
        self.count = 0
        self.lock = threading.Lock()
        self.held = threading.Event()
        self.released = threading.Event()

        def handle(path, body):
            with self.lock:
                self.count += 1
                mine = self.count
            if mine == hold_at:
                self.held.set()
                self.released.wait(timeout=300)
            req = urllib.request.Request(upstream + path, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=300) as res:
                return res.status, res.read()

        super().__init__(handle)

    def release(self):
        self.released.set()




class QedSandbox:
    """`qed sandbox --port 0`; the URL comes from its "listening on" log line."""

    def __init__(self, qed_bin):
        import re
        import subprocess
        import time

        self.proc = subprocess.Popen([qed_bin, "sandbox", "--port", "0", "--workers", "2", "--preimport", ""],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.url, log, deadline = None, [], time.time() + 120
        while self.url is None and time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            log.append(line)
            m = re.search(r"listening on (http://[\d.]+:\d+)", line)
            self.url = m.group(1) if m else None
        if self.url is None:
            self.proc.kill()
            raise RuntimeError("qed sandbox did not start:\n" + "".join(log))
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()  # drain the log

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)
