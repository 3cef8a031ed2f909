"""`qed sandbox` behaves like NeMo-Skills' sandbox: protocol, notebook semantics, output shaping."""
import json

from conftest import new_session_id


# ---- protocol ----

def test_missing_session_header_is_rejected_with_nemo_skills_error(sandbox):
    status, out = sandbox.json("POST", "/execute", {"generated_code": "1", "timeout": 1, "language": "ipython"})
    assert status == 400
    assert out == {"error": "X-Session-ID header required for ipython sessions"}


def test_malformed_json_is_a_400_with_a_message(sandbox):
    status, out = sandbox.json("POST", "/execute", raw=b'{"generated_code": "1", ', headers={"X-Session-ID": "a"})
    assert status == 400
    assert "not valid JSON" in out["error"]


def test_missing_generated_code_is_a_400(sandbox):
    status, out = sandbox.json("POST", "/execute", {"timeout": 1}, headers={"X-Session-ID": new_session_id()})
    assert status == 400 and "generated_code" in out["error"]


def test_wrong_field_types_are_400s(sandbox):
    for body in ({"generated_code": 1}, {"generated_code": "1", "timeout": "x"},
                 {"generated_code": "1", "max_output_characters": -1}, {"generated_code": "1", "language": "cobol"},
                 [1, 2]):
        status, out = sandbox.json("POST", "/execute", body, headers={"X-Session-ID": new_session_id()})
        assert status == 400, (body, out)


def test_unknown_route_and_method(sandbox):
    assert sandbox.request("GET", "/nope")[0] == 404
    assert sandbox.request("GET", "/execute")[0] == 405


def test_first_call_creates_session_second_does_not(sandbox):
    sid = new_session_id()
    assert sandbox.execute("a = 1", session=sid)["new_session_created"] is True
    assert sandbox.execute("a", session=sid)["new_session_created"] is False


def test_response_fields(sandbox):
    out = sandbox.execute("print('hi')")
    assert set(out) == {"process_status", "stdout", "stderr", "new_session_created"}
    out = sandbox.execute("print('hi')", language="python3")
    assert set(out) == {"process_status", "stdout", "stderr"}


def test_sessions_list_and_delete(sandbox):
    sid = new_session_id()
    sandbox.execute("x = 1", session=sid)
    status, listing = sandbox.json("GET", "/sessions")
    assert status == 200 and listing["backend"] == "ipython"
    entry = listing["sessions"][sid]
    assert entry["backend"] == "ipython" and entry["alive"] is True and entry["last_used"] >= entry["created"]
    status, out = sandbox.delete(sid)
    assert status == 200 and out == {"message": f"IPython session {sid} deleted successfully"}
    status, out = sandbox.delete(sid)
    assert status == 404 and out == {"error": f"IPython session {sid} not found"}


def test_health_and_metrics(sandbox):
    status, out = sandbox.json("GET", "/health")
    assert status == 200 and out["status"] == "healthy"
    sandbox.execute("1")
    status, text = sandbox.request("GET", "/metrics")
    text = text.decode()
    assert status == 200
    assert 'qed_sandbox_executions_total{language="ipython",status="completed"}' in text
    count = [line for line in text.splitlines() if line.startswith("qed_sandbox_execute_seconds_count")]
    assert int(count[0].split()[1]) >= 1


def test_session_id_in_body_is_accepted_for_older_clients(sandbox):
    sid = new_session_id()
    body = {"generated_code": "v = 5", "timeout": 2, "language": "ipython", "session_id": sid}
    assert sandbox.json("POST", "/execute", body)[0] == 200
    out = sandbox.execute("v", session=sid)
    assert out["stdout"] == "5\n"


def test_warm_pool_workers_have_sympy_and_numpy_imported(qed_bin):
    from conftest import Service
    svc = Service(qed_bin, ["--workers", "1"])
    try:
        out = svc.client.execute("import sys\nprint('sympy' in sys.modules, 'numpy' in sys.modules)", timeout=30)
        assert out["stdout"] == "True True\n"
    finally:
        svc.stop()
    assert svc.proc.returncode == 0


def test_idle_sessions_expire(qed_bin):
    import time
    from conftest import Service
    svc = Service(qed_bin, ["--workers", "1", "--preimport", "", "--session-idle-s", "1"])
    try:
        sid = new_session_id()
        svc.client.execute("kept = 1", session=sid)
        deadline = time.time() + 30
        while time.time() < deadline and sid in svc.client.json("GET", "/sessions")[1]["sessions"]:
            time.sleep(0.2)
        out = svc.client.execute("kept", session=sid)
        assert out["new_session_created"] is True and "NameError" in out["stdout"]
        status, text = svc.client.request("GET", "/metrics")
        assert "qed_sandbox_sessions_expired_total 1" in text.decode()
    finally:
        svc.stop()


# ---- notebook semantics ----

def test_state_persists_within_a_session(sandbox):
    sid = new_session_id()
    sandbox.execute("import math\nxs = [math.factorial(i) for i in range(6)]", session=sid)
    assert sandbox.execute("print(sum(xs))", session=sid)["stdout"] == "154\n"


def test_state_does_not_leak_across_sessions(sandbox):
    a, b = new_session_id(), new_session_id()
    sandbox.execute("leaked = 123", session=a)
    out = sandbox.execute("leaked", session=b)
    assert out["process_status"] == "error"
    assert "NameError: name 'leaked' is not defined" in out["stdout"]


def test_last_expression_is_echoed_like_ipython(sandbox):
    assert sandbox.execute("x = 1\nx + 1")["stdout"] == "2\n"
    assert sandbox.execute("'s'")["stdout"] == "'s'\n"
    assert sandbox.execute("None")["stdout"] == ""
    assert sandbox.execute("y = 3")["stdout"] == ""
    assert sandbox.execute("print('a')\n5")["stdout"] == "a\n5\n"


def test_long_lists_are_pretty_printed_like_ipython(sandbox):
    out = sandbox.execute("list(range(30))")["stdout"]
    assert out == "[" + ",\n ".join(str(i) for i in range(30)) + "]\n"
    out = sandbox.execute("{1: [1]*40}")["stdout"]
    assert out.startswith("{1: [1,\n  1,\n") and out.endswith("  1]}\n")


def test_exception_is_a_plain_traceback_with_error_status(sandbox):
    out = sandbox.execute("1/0")
    assert out["process_status"] == "error"
    assert out["stdout"] == "Traceback (most recent call last):\n    1/0\nZeroDivisionError: division by zero\n"
    assert out["stderr"] == ""


def test_traceback_through_functions_and_library_frames(sandbox):
    out = sandbox.execute("def f():\n    return int('x')\nf()")
    assert out["stdout"] == ("Traceback (most recent call last):\n    f()\n    return int('x')\n"
                             "ValueError: invalid literal for int() with base 10: 'x'\n")
    out = sandbox.execute("import json\njson.loads('{')")
    assert "File /usr/lib/python3" in out["stdout"] and "JSONDecodeError" in out["stdout"]


def test_syntax_error_is_reported_like_ipython(sandbox):
    out = sandbox.execute("1 +")
    assert out["process_status"] == "error"
    assert out["stdout"] == "    1 +\n       ^\nSyntaxError: invalid syntax\n"


def test_stdout_and_stderr_are_separate(sandbox):
    out = sandbox.execute("import sys\nprint('out')\nprint('err', file=sys.stderr)")
    assert out["stdout"] == "out\n" and out["stderr"] == "err\n"
    assert out["process_status"] == "completed"


def test_sympy_and_numpy_work(sandbox):
    out = sandbox.execute("import sympy as sp\nx = sp.symbols('x')\nprint(sp.factorint(360))\n"
                          "print(sp.solve(x**2 - 5*x + 6, x))\nimport numpy as np\nprint(np.arange(5).sum())")
    assert out["stdout"] == "{2: 3, 3: 2, 5: 1}\n[2, 3]\n10\n", out


def test_unicode_round_trips(sandbox):
    text = "héllo ∑ 😀 — 数学"
    out = sandbox.execute(f"print({text!r})\n{text!r}")
    assert out["stdout"] == f"{text}\n'{text}'\n"


def test_output_cut_counts_characters(sandbox):
    out = sandbox.execute("print('é' * 50)", max_output_characters=10)
    assert out["stdout"] == "é" * 10 + "<output cut>"
    out = sandbox.execute("print('a' * 10)", max_output_characters=10)  # 11 characters with the newline
    assert out["stdout"] == "a" * 10 + "<output cut>"


def test_output_exactly_at_limit_is_not_cut(sandbox):
    # "a"*9 + "\n" is 10 characters.
    out = sandbox.execute("print('a' * 9)", max_output_characters=10)
    assert out["stdout"] == "a" * 9 + "\n"


def test_timeout_message_formats_the_number_as_python_does(sandbox):
    for sent, text in ((1, "1"), (1.0, "1.0"), (0.5, "0.5")):
        sid = new_session_id()
        out = sandbox.execute("import time\nwhile True: time.sleep(0.01)", session=sid, timeout=sent)
        assert out["process_status"] == "timeout"
        assert out["stderr"].endswith(f"Execution timed out after {text} seconds\n"), out


def test_timeout_keeps_session_state_when_interrupt_works(sandbox):
    sid = new_session_id()
    sandbox.execute("kept = 7", session=sid)
    out = sandbox.execute("print('before')\nwhile True: pass", session=sid, timeout=1)
    assert out["process_status"] == "timeout" and out["stdout"] == "before\n"
    assert out["new_session_created"] is False
    assert sandbox.execute("kept", session=sid)["stdout"] == "7\n"


def test_python3_language_runs_like_python_c(sandbox):
    out = sandbox.execute("print(input() * 2)", language="python3", std_input="ab\n")
    assert out == {"process_status": "completed", "stdout": "abab\n", "stderr": ""}
    out = sandbox.execute("1/0", language="python3")
    assert out["process_status"] == "completed"  # NeMo-Skills: subprocess errors show in stderr only
    assert out["stderr"] == ('Traceback (most recent call last):\n  File "<string>", line 1, in <module>\n'
                             "ZeroDivisionError: division by zero\n")
    out = sandbox.execute("import sys; sys.exit('bye')", language="python3")
    assert out["stderr"] == "bye\n"


def test_python3_scripts_share_no_state(sandbox):
    sandbox.execute("import builtins; builtins.marker = 1", language="python3")
    out = sandbox.execute("import builtins; print(hasattr(builtins, 'marker'))", language="python3")
    assert out["stdout"] == "False\n"


def test_python3_timeout(sandbox):
    out = sandbox.execute("while True: pass", language="python3", timeout=1)
    assert out == {"process_status": "timeout", "stdout": "", "stderr": "Execution timed out after 1 seconds\n"}


def test_system_exit_in_a_cell_keeps_the_session(sandbox):
    sid = new_session_id()
    sandbox.execute("z = 9", session=sid)
    out = sandbox.execute("import sys; sys.exit(3)", session=sid)
    assert out["process_status"] == "error" and "SystemExit: 3" in out["stdout"]
    assert sandbox.execute("z", session=sid)["stdout"] == "9\n"


def test_trailing_output_whitespace_is_normalised_like_nemo_skills(sandbox):
    out = sandbox.execute("print('\\n\\nx   \\n\\n')")
    assert out["stdout"] == "x\n"


def test_json_responses_are_valid_utf8_even_for_binary_output(sandbox):
    status, data = sandbox.request("POST", "/execute",
                                   {"generated_code": "import os; _ = os.write(1, b'\\xff\\xfe ok\\n')", "timeout": 2},
                                   headers={"X-Session-ID": new_session_id()})
    assert status == 200
    out = json.loads(data.decode("utf-8"))
    assert out["stdout"].endswith("ok\n")
