"""`qed serve` driven by the official `openai` client: completions and chat, streamed and not, n > 1, seeds,
logprobs, stop strings with stop_reason, echo, usage against the HF tokenizer, /v1/models, /tokenize, /metrics."""
import json

import pytest

openai = pytest.importorskip("openai")
tokenizers = pytest.importorskip("tokenizers")
jinja2 = pytest.importorskip("jinja2")

from serve_fixtures import httpx, DEMO, MODEL, Server  # noqa: E402

PROMPT = "Problem: What is 17 * 23?\nSolution:"
QUESTION = "What is 7^2024 mod 1000?"


@pytest.fixture(scope="module")
def server(qed_bin):
    s = Server(qed_bin)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def tok():
    return tokenizers.Tokenizer.from_file(str(DEMO / "tokenizer.json"))


def extra(obj, name):
    return (obj.model_extra or {}).get(name)


def test_models_and_health(server, client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert extra(models.data[0], "max_model_len") == json.load(open(DEMO / "config.json"))["max_position_embeddings"]
    assert httpx.get(server.url + "/health").status_code == 200


def test_completion_usage_matches_tokenizer(client, tok):
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=24, temperature=0)
    assert r.object == "text_completion" and len(r.choices) == 1
    c = r.choices[0]
    assert c.finish_reason in ("stop", "length") and isinstance(c.text, str) and c.text
    assert r.usage.prompt_tokens == len(tok.encode(PROMPT).ids)
    assert 1 <= r.usage.completion_tokens <= 24
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.usage.prompt_tokens_details.cached_tokens >= 0


def test_streaming_equals_non_streaming_greedy(client):
    kwargs = dict(model=MODEL, prompt=PROMPT, max_tokens=40, temperature=0)
    full = client.completions.create(**kwargs)
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    assert text == full.choices[0].text
    finals = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finals == [full.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens


def test_chat_streamed_and_not(client, server, tok):
    messages = [{"role": "user", "content": QUESTION}]
    r = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=60, temperature=0)
    assert r.object == "chat.completion"
    msg = r.choices[0].message
    assert msg.role == "assistant" and msg.content
    counted = httpx.post(server.url + "/tokenize", json={"model": MODEL, "messages": messages}).json()
    assert r.usage.prompt_tokens == counted["count"] == len(counted["tokens"])
    # The template as transformers renders it (Jinja), counted by the HF tokenizer.
    template = json.load(open(DEMO / "tokenizer_config.json"))["chat_template"]
    rendered = jinja2.Environment().from_string(template).render(messages=messages, add_generation_prompt=True)
    assert counted["tokens"] == tok.encode(rendered, add_special_tokens=False).ids
    stream = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=60, temperature=0, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == msg.content
    assert chunks[-1].choices[0].finish_reason == r.choices[0].finish_reason


def test_n_and_seed_reproducible(client):
    kwargs = dict(model=MODEL, prompt=PROMPT, max_tokens=20, temperature=1.0, n=4, seed=1234)
    a = client.completions.create(**kwargs)
    b = client.completions.create(**kwargs)
    assert sorted(c.index for c in a.choices) == [0, 1, 2, 3]
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert len({c.text for c in a.choices}) > 1  # four samples at temperature 1 differ
    c = client.completions.create(**{**kwargs, "seed": 99})
    assert [x.text for x in c.choices] != [x.text for x in a.choices]
    # n > 1 streamed: every index gets exactly one finish.
    chunks = list(client.completions.create(stream=True, **kwargs))
    finished = sorted(ch.choices[0].index for ch in chunks if ch.choices[0].finish_reason)
    assert finished == [0, 1, 2, 3]
    for i in range(4):
        assert "".join(ch.choices[0].text for ch in chunks if ch.choices[0].index == i) == a.choices[i].text


def test_completion_logprobs(client):
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=12, temperature=0, logprobs=3,
                                  extra_body={"ignore_eos": True})
    c = r.choices[0]
    lp = c.logprobs
    assert c.finish_reason == "length"
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 12
    assert "".join(lp.tokens) == c.text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(12)]
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert chosen <= 0 and 1 <= len(top) <= 4
        assert chosen == pytest.approx(max(top.values()), abs=1e-5)  # greedy picks the most likely token


def test_chat_logprobs(client):
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": QUESTION}], max_tokens=8,
                                       temperature=0, logprobs=True, top_logprobs=2,
                                       extra_body={"ignore_eos": True})
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens == 8
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert len(t.top_logprobs) == 2 and t.logprob <= 0
        assert t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob
        assert bytes(t.bytes).decode("utf-8", "replace") == t.token or t.token == ""


def test_stop_string_and_stop_reason(client):
    base = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=40, temperature=0,
                                     extra_body={"ignore_eos": True}).choices[0].text
    stop = base[12:16]
    assert len(stop) == 4
    cut = base[:base.find(stop)]
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=40, temperature=0, stop=[stop, "@@@@"],
                                  extra_body={"ignore_eos": True})
    c = r.choices[0]
    assert (c.text, c.finish_reason, extra(c, "stop_reason")) == (cut, "stop", stop)
    kept = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=40, temperature=0, stop=stop,
                                     extra_body={"ignore_eos": True, "include_stop_str_in_output": True})
    assert kept.choices[0].text == cut + stop
    chunks = list(client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=40, temperature=0, stop=[stop],
                                            stream=True, extra_body={"ignore_eos": True}))
    assert "".join(ch.choices[0].text for ch in chunks) == cut
    assert extra(chunks[-1].choices[0], "stop_reason") == stop
    length = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=3, temperature=0,
                                       extra_body={"ignore_eos": True})
    assert length.choices[0].finish_reason == "length" and extra(length.choices[0], "stop_reason") is None


def test_echo_and_token_prompt(client, tok):
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=5, temperature=0, echo=True)
    plain = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=5, temperature=0)
    assert r.choices[0].text == PROMPT + plain.choices[0].text
    ids = client.completions.create(model=MODEL, prompt=tok.encode(PROMPT).ids, max_tokens=5, temperature=0)
    assert ids.choices[0].text == plain.choices[0].text


def test_special_tokens_kept_when_asked(client):
    kwargs = dict(model=MODEL, prompt=PROMPT, max_tokens=200, temperature=0)
    skipped = client.completions.create(**kwargs)
    if skipped.choices[0].finish_reason != "stop":
        pytest.skip("the greedy continuation did not reach EOS within 200 tokens")
    # EOS ends generation without appearing in the text either way; ignore_eos keeps going past it.
    more = client.completions.create(**{**kwargs, "max_tokens": skipped.usage.completion_tokens + 5},
                                     extra_body={"ignore_eos": True, "skip_special_tokens": False})
    assert more.usage.completion_tokens == skipped.usage.completion_tokens + 5
    assert more.choices[0].text.startswith(skipped.choices[0].text + "<|im_end|>")


def test_tokenize_prompt(server, tok):
    r = httpx.post(server.url + "/tokenize", json={"prompt": PROMPT}).json()
    assert r["tokens"] == tok.encode(PROMPT).ids and r["count"] == len(r["tokens"]) and r["max_model_len"] > 0


def test_metrics_count_tokens(server, client):
    before = server.metrics()
    r = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=7, temperature=0,
                                  extra_body={"ignore_eos": True})
    after = server.metrics()
    assert after["qed:generation_tokens_total"] - before["qed:generation_tokens_total"] == 7
    assert after["qed:prompt_tokens_total"] - before["qed:prompt_tokens_total"] == r.usage.prompt_tokens
    assert after["qed:time_to_first_token_seconds_count"] == before["qed:time_to_first_token_seconds_count"] + 1
    assert after["qed:inter_token_latency_seconds_count"] - before["qed:inter_token_latency_seconds_count"] == 6
    assert after["qed:request_success_total:length"] == before["qed:request_success_total:length"] + 1
    assert after["qed:kv_cache_used_blocks"] == 0 and after["qed:requests_in_flight"] == 0


def test_openapi_lists_served_paths(server):
    spec = httpx.get(server.url + "/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    for path in ("/v1/completions", "/v1/chat/completions", "/v1/models", "/tokenize", "/health", "/metrics"):
        assert path in spec["paths"]


def test_serve_without_model_serves_the_demo_model(qed_bin):
    """Issue 12: `qed serve` with no --model finds models/demo (relative to the binary or the checkout)."""
    import signal
    import subprocess
    import time
    from serve_fixtures import free_port
    port = free_port()
    proc = subprocess.Popen([qed_bin, "serve", "--port", str(port), "--threads", "1", "--kv-cache-mb", "16"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd="/")
    try:
        deadline = time.time() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "qed serve did not come up"
            time.sleep(0.1)
        assert [m["id"] for m in r.json()["data"]] == ["demo"]
        assert r.json()["data"][0]["root"].endswith("models/demo")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "serving the demo model" in out, out[-2000:]
