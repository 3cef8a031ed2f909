"""Server-side tool-integrated reasoning (`qed serve --sandbox URL`) and `qed run`, on the demo model with a real
`qed sandbox`: the server-side loop must produce exactly the text of a client-side loop (stop at </tool_call>, run
the code, re-send prompt + generated + output-block token ids) for greedy decoding, while prefilling fewer tokens;
streaming, limits, n>1 and a dead sandbox behave as documented in docs/serve.md."""
import json
import re
import subprocess
import threading
import time

import pytest

from serve_fixtures import DEMO, Server, free_port, httpx

PROBLEM = "What is 7^2024 mod 1000?"
OUTPUT_401 = "\n```output\n401\n```\n"


class Sandbox:
    """`qed sandbox` on a free port; a small client for the NeMo-Skills protocol."""

    def __init__(self, qed_bin):
        self.proc = subprocess.Popen([qed_bin, "sandbox", "--port", "0", "--workers", "2", "--preimport", ""],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.url = None
        log = []
        deadline = time.time() + 120
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            log.append(line)
            m = re.search(r"listening on (http://[\d.]+:\d+)", line)
            if m:
                self.url = m.group(1)
                break
        if self.url is None:
            self.proc.kill()
            raise RuntimeError("qed sandbox did not start:\n" + "".join(log))
        # Keep draining the log so the service never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()

    def execute(self, code, session):
        r = httpx.post(self.url + "/execute", json={"generated_code": code, "timeout": 10.0, "language": "ipython",
                                                    "max_output_characters": 1000, "traceback_verbosity": "Plain"},
                       headers={"X-Session-ID": session}, timeout=60)
        r.raise_for_status()
        return r.json()

    def sessions(self):
        return httpx.get(self.url + "/sessions", timeout=10).json()["sessions"]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def sandbox(qed_bin):
    s = Sandbox(qed_bin)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def server(qed_bin, sandbox):
    # Without prefix caching each resent prompt is prefilled whole, so the prefill counts compare the two loops
    # themselves rather than the cache (which would make the client-side loop nearly as cheap: docs/serve.md).
    s = Server(qed_bin, "--sandbox", sandbox.url, "--no-enable-prefix-caching")
    yield s
    s.stop()


def prompt_ids(server, problem=PROBLEM):
    r = httpx.post(server.url + "/tokenize", json={"messages": [{"role": "user", "content": problem}]}, timeout=30)
    return r.json()["tokens"]


def completion(server, body, timeout=120):
    r = httpx.post(server.url + "/v1/completions", json={"model": "demo", "temperature": 0, **body}, timeout=timeout)
    assert r.status_code == 200, r.text
    return r.json()


def prefill_total(server):
    return server.metrics()["qed:prefill_tokens_total"]


def client_side_loop(server, sandbox, ids, max_tokens, session):
    """NeMo-Skills' code_execution loop as a client: generation stops at </tool_call> (kept in the text), the code
    after the last <tool_call> runs in one sandbox session, and the next request re-sends prompt + generated ids +
    the ids of the output block tokenized on its own."""
    ids, text, rounds = list(ids), "", 0
    while True:
        out = completion(server, {"prompt": ids, "max_tokens": max_tokens, "stop": ["</tool_call>"],
                                  "include_stop_str_in_output": True, "return_token_ids": True})
        choice = out["choices"][0]
        text += choice["text"]
        ids += choice["token_ids"]
        max_tokens -= out["usage"]["completion_tokens"]
        if choice["stop_reason"] != "</tool_call>" or max_tokens <= 0:
            return text, rounds
        code = text.split("<tool_call>")[-1].split("</tool_call>")[0]
        res = sandbox.execute(code, session)
        block = "\n```output\n" + res["stdout"] + res["stderr"] + "```\n"
        block_ids = httpx.post(server.url + "/tokenize", json={"prompt": block, "add_special_tokens": False},
                               timeout=30).json()["tokens"]
        ids += block_ids
        text += block
        rounds += 1


def test_server_side_tir_equals_the_client_side_loop_and_prefills_fewer_tokens(server, sandbox):
    ids = prompt_ids(server)
    before = prefill_total(server)
    out = completion(server, {"prompt": ids, "max_tokens": 200, "qed": {"tir": True}, "return_token_ids": True})
    server_prefill = prefill_total(server) - before
    choice = out["choices"][0]
    assert OUTPUT_401 in choice["text"] and choice["text"].endswith("\\boxed{401}.")
    assert out["usage"]["qed"]["code_executions"] == 1

    before = prefill_total(server)
    text, rounds = client_side_loop(server, sandbox, ids, 200, "parity-client")
    client_prefill = prefill_total(server) - before
    assert rounds == 1
    assert choice["text"] == text
    # Server side: the prompt once, then only the output block's tokens on top of the kept KV cache.
    assert server_prefill == len(ids) + out["usage"]["qed"]["tool_output_tokens"]
    assert server_prefill < client_prefill
    # completion_tokens counts generated tokens only, as NeMo-Skills' budget does.
    assert out["usage"]["completion_tokens"] == len(choice["token_ids"]) - out["usage"]["qed"]["tool_output_tokens"]


def test_streamed_tir_sends_the_output_block_as_it_is_appended(server):
    body = {"model": "demo", "temperature": 0, "max_tokens": 200, "stream": True,
            "stream_options": {"include_usage": True}, "tools": [{"type": "code_interpreter"}],
            "messages": [{"role": "user", "content": PROBLEM}]}
    pieces, usage = [], None
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            for c in chunk["choices"]:
                pieces.append(c["delta"].get("content", ""))
    assert OUTPUT_401 in pieces  # one chunk: the block exactly as appended
    full = "".join(pieces)
    body.update(stream=False)
    del body["stream_options"]
    plain = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120).json()
    assert plain["choices"][0]["message"]["content"] == full
    assert usage["qed"]["code_executions"] == 1


def test_every_sample_of_n_has_its_own_session_and_sessions_are_deleted(server, sandbox):
    out = completion(server, {"prompt": prompt_ids(server), "max_tokens": 200, "n": 2, "qed": {"tir": True}})
    texts = [c["text"] for c in out["choices"]]
    assert texts[0] == texts[1] and OUTPUT_401 in texts[0]
    assert out["usage"]["qed"]["code_executions"] == 2
    deadline = time.time() + 30  # deletes run after the response, off the engine thread
    while any(s.startswith("qed-") for s in sandbox.sessions()) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(s.startswith("qed-") for s in sandbox.sessions())


def test_no_executions_left_ends_the_sample_at_its_tool_call(server):
    out = completion(server, {"prompt": prompt_ids(server), "max_tokens": 200,
                              "qed": {"tir": True, "max_code_executions": 0}})
    choice = out["choices"][0]
    assert choice["text"].endswith("</tool_call>") and "```output" not in choice["text"]
    assert choice["finish_reason"] == "stop" and out["usage"]["qed"]["code_executions"] == 0


def test_remaining_executions_notice_follows_the_output_block(server):
    out = completion(server, {"prompt": prompt_ids(server), "max_tokens": 120,
                              "qed": {"tir": True, "max_code_executions": 1, "add_remaining_code_executions": True}})
    text = out["choices"][0]["text"]
    assert OUTPUT_401 + "```system\nYou have run out of code executions!" in text


def test_tir_request_without_a_sandbox_is_refused(qed_bin):
    s = Server(qed_bin)
    try:
        r = httpx.post(s.url + "/v1/completions", json={"prompt": "x", "qed": {"tir": True}}, timeout=30)
        assert r.status_code == 400 and "--sandbox" in r.json()["error"]["message"]
    finally:
        s.stop()


def test_unreachable_sandbox_is_a_clear_error_not_a_hang(qed_bin):
    s = Server(qed_bin, "--sandbox", f"http://127.0.0.1:{free_port()}")
    try:
        messages = [{"role": "user", "content": PROBLEM}]
        r = httpx.post(s.url + "/v1/chat/completions", timeout=60,
                       json={"messages": messages, "temperature": 0, "max_tokens": 200, "qed": {"tir": True}})
        assert r.status_code == 502
        assert "sandbox" in r.json()["error"]["message"] and "unreachable" in r.json()["error"]["message"]
        with httpx.stream("POST", s.url + "/v1/chat/completions", timeout=60,
                          json={"messages": messages, "temperature": 0, "max_tokens": 200, "stream": True,
                                "tools": [{"type": "code_interpreter"}]}) as r:
            events = [line for line in r.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]" and "unreachable" in events[-2]
    finally:
        s.stop()


def test_qed_run_solves_the_issue_problem_with_a_real_sandbox_call(qed_bin):
    r = subprocess.run([qed_bin, "run", PROBLEM, "--threads", "2"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "<tool_call>" in r.stdout and OUTPUT_401 in r.stdout
    assert r.stdout.rstrip("\n").splitlines()[-1] == "Answer: 401"


def test_qed_run_without_tools_answers_without_code(qed_bin):
    r = subprocess.run([qed_bin, "run", PROBLEM, "--no-tools", "--model", str(DEMO), "--threads", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "```output" not in r.stdout and r.stdout.rstrip("\n").splitlines()[-1].startswith("Answer: ")


def test_qed_run_reports_a_sandbox_that_cannot_start_in_one_line(qed_bin, tmp_path):
    r = subprocess.run([qed_bin, "run", PROBLEM, "--python", str(tmp_path / "no-python")], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0 and r.stdout == ""
    assert "could not start the code sandbox" in r.stderr and "no-python" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = subprocess.run([qed_bin, "run", PROBLEM, "--sandbox", "not-a-url"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0 and "sandbox URL" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def tir_stream_maybe_hanging_up_while_held(url, i):
    """A sampled TIR stream; odd ones hang up right after </tool_call>, i.e. while the sample is held."""
    body = {"model": "demo", "max_tokens": 200, "temperature": 0.8, "seed": i, "stream": True, "n": 1 + i % 2,
            "qed": {"tir": True}, "messages": [{"role": "user", "content": f"What is {i + 3}^{100 + i} mod 97?"}]}
    with httpx.Client(timeout=120) as c:
        with c.stream("POST", url + "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if i % 2 and "</tool_call>" in line:
                    return "hung up"
                if line == "data: [DONE]":
                    return "done"
    raise AssertionError(f"stream {i} ended without [DONE]")


def test_concurrent_tir_streams_with_hang_ups_while_held_leave_nothing_behind(server, sandbox):
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(lambda i: tir_stream_maybe_hanging_up_while_held(server.url, i), range(12)))
    assert results.count("done") > 0 and results.count("hung up") > 0
    deadline = time.time() + 60
    while True:
        m = server.metrics()
        leftover = [s for s in sandbox.sessions() if s.startswith("qed-")]
        if m["qed:requests_in_flight"] == 0 and m["qed:kv_cache_used_blocks"] == 0 and not leftover:
            break
        assert time.time() < deadline, (m, leftover)
        time.sleep(0.1)
    assert m["qed:num_requests_running"] == 0 and m["qed:num_requests_waiting"] == 0
    out = completion(server, {"prompt": prompt_ids(server), "max_tokens": 200, "qed": {"tir": True}})
    assert OUTPUT_401 in out["choices"][0]["text"]
