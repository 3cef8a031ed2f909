"""Early stop for sampled ensembles on `qed serve` with the demo model (which answers the generic/math prompt in
\\boxed{} without code): consensus, stop_after_first, time budgets, request groups and the time bank. Samples are
seeded and the engine steps them in lockstep, so which sample ends at which step does not depend on the machine."""
import contextlib
import json
import re
import uuid

import pytest

openai = pytest.importorskip("openai")

from serve_fixtures import httpx, MODEL, Server  # noqa: E402

PROBLEM = ("Solve the following math problem. Make sure to put the answer (and only answer) inside \\boxed{}.\n\n"
           "What is 12 + 30?")


@pytest.fixture(scope="module")
def server(qed_bin):
    s = Server(qed_bin)
    yield s
    s.stop()


def chat(server, qed, **kw):
    body = {"model": MODEL, "messages": [{"role": "user", "content": PROBLEM}], "temperature": 0.8, "seed": 3,
            "qed": qed, **kw}
    r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


def search_boxed(text):
    """NeMo-Skills' search_boxed (math_grader.py): the last \\boxed, braces matched, None without one."""
    idx = text.rfind("\\boxed")
    if idx < 0 or not text.startswith("\\boxed{", idx):
        return None
    depth = 0
    for i in range(idx + len("\\boxed"), len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[idx + len("\\boxed{"):i]
    return None


def cut_of(choice):
    return (choice.get("qed") or {}).get("cut")


def test_consensus_cuts_the_rest_once_k_answers_agree(server):
    before = server.metrics()
    r = chat(server, {"consensus": 3}, n=12, temperature=0.3)
    summary = r["qed"]
    assert summary["cut"] == "consensus", summary
    finished = [c for c in r["choices"] if c["finish_reason"] in ("stop", "length")]
    cut = [c for c in r["choices"] if c["finish_reason"] == "abort"]
    assert cut and all(cut_of(c) == "consensus" for c in cut)
    assert all(cut_of(c) is None for c in finished)
    answers = [search_boxed(c["message"]["content"]) for c in finished]
    assert answers.count(summary["answer"]) >= 3 and summary["votes"] == answers.count(summary["answer"])
    assert summary["finished"] == len(finished)
    # The cut samples hold what they had generated; usage counts it.
    assert r["usage"]["completion_tokens"] > 0
    cuts = server.metrics()["qed:early_stop_cut_samples_total:consensus"]
    assert cuts - before["qed:early_stop_cut_samples_total:consensus"] == len(cut)


def test_stop_after_first_keeps_the_first_finishers(server):
    r = chat(server, {"stop_after_first": 2}, n=6)
    finished = [c for c in r["choices"] if c["finish_reason"] in ("stop", "length")]
    cut = [c for c in r["choices"] if c["finish_reason"] == "abort"]
    assert len(finished) >= 2 and len(finished) + len(cut) == 6
    assert r["qed"]["cut"] == ("stop_after_first" if cut else None) or len(finished) > 2
    assert all(cut_of(c) == "stop_after_first" for c in cut)


def test_zero_time_budget_cuts_everything_and_still_answers(server):
    r = chat(server, {"time_budget_s": 0}, n=3, max_tokens=500)
    assert [c["finish_reason"] for c in r["choices"]] == ["abort"] * 3
    assert [cut_of(c) for c in r["choices"]] == ["time_budget"] * 3
    assert r["qed"]["cut"] == "time_budget" and r["qed"]["time_budget_s"] == 0


def test_time_budget_ends_a_long_stream_with_marked_chunks(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=300)
    stream = client.completions.create(model=MODEL, prompt="Problem: count to a thousand.\nSolution:", n=4,
                                       max_tokens=900, temperature=1.0, seed=1, stream=True,
                                       stream_options={"include_usage": True},
                                       extra_body={"ignore_eos": True, "qed": {"time_budget_s": 1.0}})
    finish, cuts, summary, text = {}, {}, None, {}
    for chunk in stream:
        extra = chunk.model_extra or {}
        if extra.get("qed"):
            summary = extra["qed"]
        for c in chunk.choices:
            text[c.index] = text.get(c.index, "") + c.text
            if c.finish_reason:
                finish[c.index] = c.finish_reason
                cuts[c.index] = ((c.model_extra or {}).get("qed") or {}).get("cut")
    if all(f == "length" for f in finish.values()):
        pytest.skip("this machine generated 4 x 900 tokens within 1 s: nothing left to cut")
    assert sorted(finish) == [0, 1, 2, 3]
    for i in range(4):
        assert (finish[i], cuts[i]) in (("abort", "time_budget"), ("length", None))
    assert summary["cut"] == "time_budget"
    assert any(text[i] for i in range(4))  # what was generated before the deadline is returned


def final_choice_of_stream(lines):
    """Reads an SSE completions stream to [DONE]; returns (finish_reason, qed.cut) of its one choice."""
    finish = cut = None
    for line in lines:
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        for c in json.loads(line[len("data: "):]).get("choices", []):
            if c.get("finish_reason"):
                finish, cut = c["finish_reason"], cut_of(c)
    return finish, cut


def test_a_group_of_single_sample_requests_is_one_ensemble(server):
    group = f"problem-{uuid.uuid4()}"
    long = {"model": MODEL, "prompt": "Problem: count to a thousand.\nSolution:", "max_tokens": 900,
            "ignore_eos": True, "temperature": 1.0, "stream": True, "qed": {"group": group, "stop_after_first": 2}}
    with contextlib.ExitStack() as stack:
        # Four requests that would run 900 tokens join the group first...
        streams = []
        for seed in range(4):
            client = stack.enter_context(httpx.Client(timeout=300))
            r = stack.enter_context(client.stream("POST", server.url + "/v1/completions", json=dict(long, seed=seed)))
            assert r.status_code == 200
            lines = r.iter_lines()
            next(lines)  # generating: a member of the group
            streams.append(lines)
        # ...then two that stop at EOS after a few dozen tokens take the group's policy and end it.
        short = [chat(server, {"group": group}, seed=seed) for seed in (0, 1)]
        assert [s["choices"][0]["finish_reason"] for s in short] == ["stop", "stop"]
        assert short[0]["qed"]["cut"] is None and short[1]["qed"]["cut"] == "stop_after_first"
        assert all(s["qed"]["group"] == group for s in short)
        assert [final_choice_of_stream(lines) for lines in streams] == [("abort", "stop_after_first")] * 4


def test_conflicting_early_stop_fields_in_an_open_group_are_a_400(server):
    group = f"g-{uuid.uuid4()}"
    body = {"model": MODEL, "prompt": "Problem: count.\nSolution:", "max_tokens": 900, "ignore_eos": True,
            "stream": True, "qed": {"group": group, "consensus": 4}}
    with httpx.Client(timeout=120) as c:
        with c.stream("POST", server.url + "/v1/completions", json=body) as first:
            assert first.status_code == 200
            lines = first.iter_lines()  # kept: a collected iterator closes the connection
            next(lines)
            other = dict(body, stream=False, qed={"group": group, "consensus": 5})
            r = c.post(server.url + "/v1/completions", json=other)
            assert r.status_code == 400 and r.json()["error"]["param"] == "qed"
            same = dict(body, stream=False, max_tokens=2, qed={"group": group})  # omitting the fields is fine
            assert c.post(server.url + "/v1/completions", json=same).status_code == 200


@pytest.mark.parametrize("qed", [{"consensus": 0}, {"stop_after_first": -1}, {"time_budget_s": -1},
                                 {"time_budget_s": "soon"}, {"group": 7}, {"group": "x" * 300}, "fast"])
def test_bad_early_stop_fields_are_a_400(server, qed):
    body = {"model": MODEL, "prompt": "x", "max_tokens": 2, "qed": qed}
    r = httpx.post(server.url + "/v1/completions", json=body, timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"]


def test_time_bank_lends_unused_time_to_the_next_question(qed_bin):
    s = Server(qed_bin, "--time-bank-s", "1000", "--time-bank-max-extra-s", "50")
    try:
        first = chat(s, {"group": "q1"}, max_tokens=4)
        assert first["qed"]["time_budget_s"] == 1000  # the bank starts empty
        second = chat(s, {"group": "q2"}, max_tokens=4)
        assert second["qed"]["time_budget_s"] == 1050  # q1 left ~1000 s unused; at most 50 s extra
        solo = chat(s, {"consensus": 2}, max_tokens=4)  # no group: not a question, no bank
        assert solo["qed"]["time_budget_s"] is None
    finally:
        s.stop()


def test_requests_without_early_stop_fields_have_no_qed_object(server):
    r = chat(server, None, max_tokens=4)
    assert "qed" not in r and all("qed" not in c for c in r["choices"])


def test_boxed_extraction_agrees_with_search_boxed_on_served_text(server):
    r = chat(server, {"consensus": 100}, n=4)  # never reached: every sample finishes, all vote
    answers = [search_boxed(c["message"]["content"]) for c in r["choices"]]
    voted = [a for a in answers if a is not None]
    assert r["qed"]["cut"] is None and r["qed"]["finished"] == 4
    if voted:
        top = max(set(voted), key=voted.count)
        assert r["qed"]["votes"] == voted.count(top)
        assert voted.count(r["qed"]["answer"]) == voted.count(top)
    assert all(re.sub(r"\s", "", c["message"]["content"]) for c in r["choices"])
