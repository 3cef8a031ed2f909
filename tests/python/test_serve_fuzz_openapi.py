"""Schemathesis (property-based API fuzzing, from PyPI) generates requests from `qed serve`'s own /openapi.json,
for every operation: ones the schema allows and ones that break it. None may get a 5xx or take the server down.
The context is cut to 48 tokens so that an accepted `n = 128` generation stays small."""
import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from serve_fixtures import httpx, Server  # noqa: E402

EXAMPLES = 15  # per operation and mode: ~200 requests in all


@pytest.fixture(scope="module")
def server(qed_bin):
    s = Server(qed_bin, "--max-model-len", "48", "--max-num-seqs", "128")
    yield s
    s.stop()


def operations(server):
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    ops = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in ops} >= {"/v1/completions", "/v1/chat/completions", "/v1/models", "/tokenize"}
    return ops


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE],
                         ids=["valid", "invalid"])
def test_no_request_from_the_schema_gets_a_5xx(server, mode):
    statuses = {}
    for op in operations(server):
        if mode == schemathesis.GenerationMode.NEGATIVE and op.method.upper() != "POST":
            continue  # nothing to break in a GET without parameters
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy(generation_mode=mode))
        def check(case):
            response = case.call(base_url=server.url, timeout=120)
            statuses.setdefault(op.path, set()).add(response.status_code)
            case.validate_response(response, checks=[not_a_server_error])

        check()
    assert statuses and all(s < 500 for codes in statuses.values() for s in codes), statuses
    if mode == schemathesis.GenerationMode.NEGATIVE:
        assert any(400 <= s < 500 for s in statuses["/v1/completions"])  # schema-breaking bodies are refused


def test_server_is_healthy_and_idle_after_fuzzing(server):
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200
    m = server.metrics()
    assert m["qed:requests_in_flight"] == 0 and m["qed:kv_cache_used_blocks"] == 0
