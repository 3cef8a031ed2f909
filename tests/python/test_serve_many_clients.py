"""500 concurrent streaming clients on `qed serve` (demo model), a third of them hanging up mid-stream at random:
every stream that is read to the end ends with [DONE], and once idle the server holds no KV blocks, no requests,
and still answers."""
import asyncio
import random
import time

import pytest

from serve_fixtures import httpx, MODEL, Server

CLIENTS = 500


@pytest.fixture(scope="module")
def server(qed_bin):
    s = Server(qed_bin, "--max-queue", str(CLIENTS + 50), "--max-num-seqs", "128", "--io-threads", "2")
    yield s
    s.stop()


async def one_client(client, url, i):
    rng = random.Random(i)
    chat = i % 2 == 0
    body = {"model": MODEL, "max_tokens": rng.randint(2, 8), "temperature": 0.8, "seed": i, "stream": True,
            "ignore_eos": rng.random() < 0.5, "n": rng.choice([1, 1, 1, 2])}
    if chat:
        body["messages"] = [{"role": "user", "content": f"What is {i} + {i % 7}?"}]
    else:
        body["prompt"] = f"Problem: What is {i} * {i % 5}?\nSolution:"
    hang_up_after = rng.choice([None, None, 0, 1, 2])  # events read before hanging up
    events = 0
    async with client.stream("POST", url + ("/v1/chat/completions" if chat else "/v1/completions"),
                             json=body) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if not line:
                continue
            if hang_up_after is not None and events >= hang_up_after:
                return "hung up"  # leaving the block closes the connection mid-stream
            events += 1
            if line == "data: [DONE]":
                return "done"
    raise AssertionError(f"client {i}: stream ended without [DONE]")


async def all_clients(url):
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=httpx.Timeout(300), limits=limits) as client:
        return await asyncio.gather(*(one_client(client, url, i) for i in range(CLIENTS)))


def test_500_streaming_clients_with_random_hang_ups_leak_nothing(server):
    results = asyncio.run(all_clients(server.url))
    assert results.count("done") > CLIENTS // 3 and results.count("hung up") > CLIENTS // 5
    deadline = time.time() + 120
    while True:
        m = server.metrics()
        if m["qed:requests_in_flight"] == 0 and m["qed:kv_cache_used_blocks"] == 0:
            break
        assert time.time() < deadline, m
        time.sleep(0.2)
    assert m["qed:num_requests_running"] == 0 and m["qed:num_requests_waiting"] == 0
    assert m["qed:request_success_total:abort"] > 0  # the hang-ups reached the engine as aborts
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200
    r = httpx.post(server.url + "/v1/completions", json={"model": MODEL, "prompt": "Problem: 2 + 2?\nSolution:",
                                                         "max_tokens": 4}, timeout=60)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
