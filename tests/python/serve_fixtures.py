"""Starts `qed serve` on the demo model (a real 6M-param Qwen2 with tokenizer and ChatML template) on a free port
and stops it at the end; the server must exit cleanly on SIGTERM."""
import contextlib
import pathlib
import signal
import socket
import subprocess
import time

try:
    import httpx
except ImportError:  # recent `openai` releases ship the same client as httpx2
    import httpx2 as httpx

REPO = pathlib.Path(__file__).resolve().parents[2]
DEMO = REPO / "models" / "demo"
MODEL = "demo"


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, qed_bin, *extra, model_args=("--model", str(DEMO), "--served-model-name", MODEL)):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [qed_bin, "serve", *model_args, "--port", str(self.port),
             "--threads", "2", "--kv-cache-mb", "64", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"qed serve exited: {self.proc.stdout.read()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                self.proc.kill()
                raise RuntimeError("qed serve did not become healthy in 60 s")
            time.sleep(0.1)

    def metrics(self) -> dict:
        """Unlabelled view of /metrics: name → value (histogram buckets skipped)."""
        out = {}
        for line in httpx.get(self.url + "/metrics", timeout=10).text.splitlines():
            if line.startswith("#") or not line.strip() or "_bucket{" in line:
                continue
            name, value = line.rsplit(" ", 1)
            key = name.split("{")[0]
            if "finished_reason=" in name:
                key += ":" + name.split('finished_reason="')[1].split('"')[0]
            if "reason=" in name and "finished_reason=" not in name:
                key += ":" + name.split('reason="')[1].split('"')[0]
            out[key] = float(value)
        return out

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
            raise AssertionError(f"qed serve did not stop on SIGTERM:\n{out[-3000:]}")
        assert self.proc.returncode == 0, out[-3000:]
