"""`qed chat-template` renders exactly what transformers' apply_chat_template(tokenize=False) renders.

Every conversation below goes through ONE `qed chat-template` process per template (JSON lines in, JSON strings
out) and through transformers' Jinja rendering of the same tokenizer_config.json; the strings must be identical.
"""
import json
import pathlib
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "chat_templates"

SYSTEM = {"role": "system", "content": "You are a careful mathematician. Put the final answer in \\boxed{}."}
USER = {"role": "user", "content": "What is 2 + 2?"}
ASSISTANT = {"role": "assistant", "content": "2 + 2 = 4, so the answer is $\\boxed{4}$."}


def _user(text):
    return {"role": "user", "content": text}


def _assistant(text, **extra):
    return {"role": "assistant", "content": text, **extra}


def _tool(text):
    return {"role": "tool", "content": text}


def common_conversations():
    """(messages, add_generation_prompt) pairs every template must render like transformers."""
    convs = [
        [USER],
        [SYSTEM, USER],
        [SYSTEM, USER, ASSISTANT],
        [USER, ASSISTANT],
        [SYSTEM, USER, ASSISTANT, _user("And 3 + 3?")],
        [USER, ASSISTANT, _user("Now multiply them."), _assistant("4 * 6 = 24")],
        [_user("  leading and trailing spaces  ")],
        [_user("\n\nnewlines around\n\n")],
        [_user("\t tabs \t"), _assistant("\n  indented answer\n")],
        [_user("\u00a0nbsp and ideographic space\u3000"), _assistant("\u2003em space\u2028")],
        [_user("zero width\u200b"), _assistant("\u200bstill there")],
        [_user("Unicode: ∫₀¹ x² dx = ⅓, emoji 🧮🤖, CJK 数学, RTL שלום")],
        [_user("")],
        [SYSTEM, _user(""), _assistant("")],
        [{"role": "system", "content": ""}, USER],
        [_user(r"Prove that $\sum_{k=1}^{n} k = \frac{n(n+1)}{2}$ and \begin{align} a &= b \\ c &= d \end{align}")],
        [USER, _assistant('<tool_call>\nprint(2 + 2)\n</tool_call>\n```output\n4\n```\nSo \\boxed{4}.')],
        [USER, _assistant("Let me compute.\n<tool_call>\n{\"name\": \"python\", \"arguments\": {}}\n</tool_call>")],
        [_user("Quotes ' \" and braces {{ }} {% %} and backslashes \\n \\t")],
        [_user("<|im_start|>literal special-looking text<|im_end|>")],
        [SYSTEM, {"role": "system", "content": "A second system message."}, USER],
        [USER, ASSISTANT, {"role": "system", "content": "Mid-conversation system note."}, _user("Continue.")],
        [_user("a" * 3000)],
        [_user("line1\r\nline2\r\n")],
        [SYSTEM, USER, ASSISTANT, _user("Why?"), _assistant("Because."), _user("Thanks!")],
        [USER, _assistant("<think>\nreasoning\n</think>\n\nfinal")],
    ]
    return [(messages, agp) for messages in convs for agp in (True, False)]


def tool_conversations():
    """Conversations with role "tool" (both Qwen templates wrap them in <tool_response> inside a user turn)."""
    convs = [
        [USER, _assistant("<tool_call>\nprint(4)\n</tool_call>"), _tool("4")],
        [USER, _assistant("calling two tools"), _tool("first result"), _tool("second result")],
        [SYSTEM, USER, _assistant("step"), _tool("out 1"), _assistant("another step"), _tool("out 2"),
         _assistant("Done: \\boxed{4}")],
        [_tool("a tool message first")],
        [USER, _assistant("x"), _tool("  spaced output \n")],
    ]
    return [(messages, agp) for messages in convs for agp in (True, False)]


PYTHON_TOOL = {"type": "function", "function": {
    "name": "python", "description": "Run Python code and return stdout. Unicode: π ≈ 3.14159 ✓ \"quoted\"",
    "parameters": {"type": "object", "properties": {"code": {"type": "string", "description": "the code"}},
                   "required": ["code"]}}}
NUMBERS_TOOL = {"type": "function", "function": {
    "name": "numbers", "description": "Number formats as Python's json.dumps writes them.",
    "parameters": {"type": "object", "properties": {
        "lat": {"type": "number", "minimum": -90.0, "maximum": 90.5}, "days": {"type": "integer", "default": 3},
        "tiny": {"default": 1e-05}, "small": {"default": 0.0001}, "big": {"default": 1e16}, "large": {"default": 1e15},
        "third": {"default": 0.3333333333333333}, "neg": {"default": -2.5e-300}, "zero": {"default": -0.0},
        "none": {"default": None}, "flag": {"default": True}, "empty": {"default": {}}, "list": {"default": []},
        "control": {"default": "tab\tnewline\nbell\u0007 del\u007f sep\u2028"}}}}}
PLAIN_TOOL = {"name": "plain", "description": "A tool given without the OpenAI wrapper", "parameters": {}}


def _call(name, arguments, wrapped=True):
    call = {"name": name, "arguments": arguments}
    return {"type": "function", "function": call} if wrapped else call


def tool_call_conversations():
    """(messages, add_generation_prompt, tools): tool definitions in the system turn and assistant tool_calls."""
    tools = [PYTHON_TOOL, NUMBERS_TOOL, PLAIN_TOOL]
    call = _assistant("", tool_calls=[_call("python", {"code": "print(2 + 2)"})])
    convs = [
        ([USER], tools),
        ([SYSTEM, USER], tools),
        ([SYSTEM, USER], [PYTHON_TOOL]),
        ([USER, call, _tool("4"), _assistant("The answer is 4.")], tools),
        ([USER, call, _tool("4")], None),
        ([SYSTEM, USER, _assistant("Let me run two things.", tool_calls=[
            _call("python", '{"code": "print(1)"}'), _call("numbers", {"x": 1.5, "y": [1, 2, {"z": "é"}]}, False)]),
          _tool("1"), _tool("ok")], tools),
        ([USER, _assistant("\n", tool_calls=[_call("python", {"code": "s = \"a\\nb\"\nprint(s)", "n": 10**3})])],
         [PYTHON_TOOL]),
        ([USER, _assistant("<think>\nneed code\n</think>\n\n", tool_calls=[_call("python", {"code": "1"})]),
          _tool("1")], tools),
        ([USER, _assistant("<think>\nneed code\n</think>\n\nRunning it.", tool_calls=[_call("python", "{}")])],
         None),
        ([USER, _assistant("answer", reasoning="given as reasoning")], None),
        ([USER, _assistant("answer", thinking="given as thinking")], None),
        ([USER, _assistant("answer", reasoning_content=None, reasoning="fallback after null")], None),
        ([USER, _assistant("a", tool_calls=[])], []),
    ]
    return [(messages, agp, tools_) for messages, tools_ in convs for agp in (True, False)]


def qwen3_conversations():
    """Qwen3's reasoning handling: enable_thinking, <think> in history, reasoning_content, multi-step tool turns."""
    think = _assistant("<think>\nI add 2 and 2.\n</think>\n\nThe answer is 4.")
    cases = []
    for enable in (True, False, None):
        for messages in ([USER], [SYSTEM, USER], [USER, think, _user("And 3+3?")], [USER, think]):
            cases.append((messages, True, enable))
    convs = [
        [USER, think],
        [USER, think, _user("next"), think],
        [USER, _assistant("<think>\n\n</think>\n\nNo reasoning.")],
        [USER, _assistant("no think tags at all")],
        [USER, _assistant("<think>only opening tag, never closed")],
        [USER, _assistant("text before <think>\nnested <think> inner\n</think>\nafter one</think>\n\nlast")],
        [USER, _assistant("reasoning without opening tag</think>answer")],
        [USER, _assistant("\n\n<think>\n\n\nspaced\n\n</think>\n\n\n\nanswer\n")],
        [USER, _assistant("answer", reasoning_content="explicit reasoning")],
        [USER, _assistant("<think>\ninline\n</think>\n\nanswer", reasoning_content="explicit wins")],
        [USER, _assistant("<think>\nignored?\n</think>\n\nanswer", reasoning_content="")],
        [USER, _assistant("answer", reasoning_content=None)],
        [USER, _assistant("a", reasoning_content="r1"), _user("again"), _assistant("b", reasoning_content="r2")],
        [USER, _assistant("<think>\nplan\n</think>\n\n<tool_call>\nprint(1)\n</tool_call>"),
         _tool("1"), _assistant("<think>\nread output\n</think>\n\nSo 1.")],
        [USER, think, _user("<tool_response>\nresult\n</tool_response>"), think],
        [USER, _assistant("<think>\nmid\n</think>\n\nnot last"), _tool("out"),
         _assistant("<think>\nlast\n</think>\n\nfinal")],
        [USER, _assistant("no reasoning, not last"), _tool("out"), _assistant("final")],
    ]
    for messages in convs:
        for agp in (True, False):
            cases.append((messages, agp, None))
    return cases


TEMPLATES = {
    # name: (tokenizer dir relative to shared/ or fixtures/, case builder)
    "qwen3": ("shared", "data/tokenizers/qwen3"),
    "llama3": ("shared", "data/tokenizers/llama3"),
    "qwen2.5": ("fixture", "qwen2.5"),
    "chatml": ("fixture", "chatml"),
}


def cases_for(name):
    """(messages, add_generation_prompt, enable_thinking, tools) for one template."""
    cases = [(m, agp, None, None) for m, agp in common_conversations()]
    # Llama-3 and plain ChatML ignore tools and tool_calls (their Jinja never reads them): rendered all the same.
    cases += [(m, agp, None, tools) for m, agp, tools in tool_call_conversations()]
    if name in ("qwen3", "qwen2.5"):
        cases += [(m, agp, None, None) for m, agp in tool_conversations()]
    if name == "qwen3":
        cases += [(m, agp, enable, None) for m, agp, enable in qwen3_conversations()]
    return cases


def tokenizer_dir(name, shared_dir, tmp_path_factory):
    where, rel = TEMPLATES[name]
    if where == "shared":
        path = shared_dir / rel
        if not path.exists():
            pytest.skip(f"{path} not present")
        return path
    # transformers needs a tokenizer.json beside the fixture's tokenizer_config.json; these fixtures are Qwen
    # templates, so Qwen3's tokenizer.json (same byte-level BPE and ChatML specials) serves.
    qwen_json = shared_dir / "data/tokenizers/qwen3/tokenizer.json"
    if not qwen_json.exists():
        pytest.skip(f"{qwen_json} not present")
    path = tmp_path_factory.mktemp(f"tok-{rel}")
    shutil.copy(FIXTURES / rel / "tokenizer_config.json", path / "tokenizer_config.json")
    shutil.copy(qwen_json, path / "tokenizer.json")
    return path


def render_with_qed(qed_bin, directory, cases):
    lines = []
    for messages, agp, enable, tools in cases:
        request = {"messages": messages, "add_generation_prompt": agp}
        if enable is not None:
            request["enable_thinking"] = enable
        if tools is not None:
            request["tools"] = tools
        lines.append(json.dumps(request, ensure_ascii=False))
    out = subprocess.run([qed_bin, "chat-template", "--tokenizer", str(directory)], input="\n".join(lines) + "\n",
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    # split("\n"), not splitlines(): raw U+2028 inside a JSON string is legal and must not split a line.
    rendered = [json.loads(line) for line in out.stdout.split("\n")[:-1]]
    assert len(rendered) == len(cases)
    return rendered


def render_with_transformers(directory, cases):
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(str(directory))
    rendered = []
    for messages, agp, enable, tools in cases:
        kwargs = {} if enable is None else {"enable_thinking": enable}
        rendered.append(tok.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=agp,
                                                **kwargs))
    return rendered


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_chat_template_matches_transformers(name, qed_bin, shared_dir, tmp_path_factory):
    directory = tokenizer_dir(name, shared_dir, tmp_path_factory)
    cases = cases_for(name)
    assert len(cases) >= 30
    ours = render_with_qed(qed_bin, directory, cases)
    theirs = render_with_transformers(directory, cases)
    mismatches = [(i, cases[i], ours[i], theirs[i]) for i in range(len(cases)) if ours[i] != theirs[i]]
    print(f"\nchat template parity {name}: {len(cases) - len(mismatches)}/{len(cases)} identical")
    for i, case, mine, ref in mismatches[:5]:
        print(f"  case {i}: {json.dumps(case, ensure_ascii=False)[:300]}\n    qed:          {mine!r}\n"
              f"    transformers: {ref!r}")
    assert not mismatches


def test_family_is_recognised(qed_bin, shared_dir, tmp_path_factory):
    expected = {"qwen3": "qwen3", "llama3": "llama3", "qwen2.5": "qwen2.5-chatml", "chatml": "chatml"}
    for name, family in expected.items():
        directory = tokenizer_dir(name, shared_dir, tmp_path_factory)
        out = subprocess.run([qed_bin, "chat-template", "--tokenizer", str(directory), "--print-family"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == family


def test_unknown_template_is_one_error_naming_the_file(qed_bin, tmp_path):
    config = {"chat_template": "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    out = subprocess.run([qed_bin, "chat-template", "--tokenizer", str(tmp_path)], input="", capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 1
    assert f"unsupported chat template in {tmp_path / 'tokenizer_config.json'}" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_bad_request_line_names_the_line(qed_bin, shared_dir, tmp_path_factory):
    directory = tokenizer_dir("qwen2.5", shared_dir, tmp_path_factory)
    stdin = json.dumps({"messages": [USER]}) + "\n" + json.dumps({"messages": [{"role": "user"}]}) + "\n"
    out = subprocess.run([qed_bin, "chat-template", "--tokenizer", str(directory)], input=stdin,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "stdin line 2" in out.stderr and "content" in out.stderr
