"""lm-eval (EleutherAI's harness, from PyPI) runs a tiny generate_until task against `qed serve` through its
`local-completions` model, and what it scored is what the server answers the same requests with."""
import json
import os
import pathlib

import pytest

lm_eval = pytest.importorskip("lm_eval")
openai = pytest.importorskip("openai")

from serve_fixtures import MODEL, REPO, Server  # noqa: E402

DATA = REPO / "tests" / "fixtures" / "lm_eval" / "qed_tiny_math.jsonl"

TASK = """
task: qed_tiny_math
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["<|im_end|>"]
  max_gen_toks: 48
  do_sample: false
  temperature: 0
filter_list:
  - name: boxed
    filter:
      - function: regex
        regex_pattern: "\\\\\\\\boxed\\\\{{([^{{}}]*)\\\\}}"
        group_select: -1
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


@pytest.fixture(scope="module")
def server(qed_bin):
    s = Server(qed_bin)
    yield s
    s.stop()


def test_local_completions_runs_a_task_against_the_server(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    (tmp_path / "task.yaml").write_text(TASK.format(data=DATA))
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    out = simple_evaluate(
        model="local-completions",
        model_args=f"base_url={server.url}/v1/completions,model={MODEL},tokenizer_backend=None,"
                   "tokenized_requests=False,num_concurrent=1,max_retries=1",
        tasks=["qed_tiny_math"], task_manager=TaskManager(include_path=str(tmp_path), include_defaults=False), log_samples=True)
    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    samples = out["samples"]["qed_tiny_math"]
    assert len(samples) == len(rows)
    score = out["results"]["qed_tiny_math"]["exact_match,boxed"]
    assert 0.0 <= score <= 1.0

    # The harness's generations are the server's greedy answers to the same prompts.
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=120)
    for s in samples:
        doc = s["doc"]
        expected = client.completions.create(model=MODEL, prompt=doc["prompt"], max_tokens=48, temperature=0,
                                             stop=["<|im_end|>"], seed=1234).choices[0].text
        assert s["resps"][0][0] == expected
        assert expected  # the demo model says something
    correct = sum(s["exact_match"] for s in samples)
    assert score == pytest.approx(correct / len(samples))
