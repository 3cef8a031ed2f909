# qed sandbox worker: one Python interpreter per session, inside the jail (bubblewrap + seccomp + rlimits).
#
# The service embeds this file in the qed binary and starts it as `python3 -I -B -c SOURCE CONFIG_JSON`.
# File descriptors (set up by the service before exec):
#   0  /dev/null                      (user code never reads the control channel through stdin)
#   1  stdout pipe, 2  stderr pipe    (the service reads and caps them; raw os.write(1, ...) lands there too)
#   3  requests, one JSON object per line       (service -> worker)
#   4  replies, one JSON object per line        (worker -> service)
# A reply is written only after stdout/stderr were flushed, so the service finds all of a cell's output in the
# pipes when the reply arrives. It echoes the request's "seq": user code can write to fd 4 too, and a forged or
# stale line must not be taken for the answer to a later call.
#
# Cells behave like NeMo-Skills' IPython sessions, observably: the value of a trailing expression is echoed
# through a displayhook (pretty-printed the way IPython does), tracebacks are IPython's "Plain" layout and go to
# stdout, and a timeout raises KeyboardInterrupt in the cell (the session keeps its state). Scripts
# (language python3) behave like `python3 -c CODE`: fresh globals, tracebacks on stderr, exit codes ignored.
import ast
import builtins
import collections
import hashlib
import io
import json
import linecache
import os
import resource
import signal
import sys
import traceback

REQUESTS_FD = 3
REPLIES_FD = 4
MAIN_PID = os.getpid()


class CappedText(io.TextIOBase):
    """sys.stdout/sys.stderr: writes through to the pipe until the per-cell character budget is spent, then drops
    text, so a runaway print loop costs the service nothing to read. `.buffer` stays uncapped (the service caps
    the pipe as well)."""

    def __init__(self, fd):
        super().__init__()
        self.buffer = open(fd, "wb", buffering=1 << 16, closefd=False)
        self._fd = fd
        self.left = 0

    @property
    def encoding(self):
        return "utf-8"

    @property
    def errors(self):
        return "backslashreplace"

    def writable(self):
        return True

    def isatty(self):
        return False

    def fileno(self):
        return self._fd

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if self.left > 0:
            part = s[: self.left]
            self.left -= len(part)
            self.buffer.write(part.encode("utf-8", "backslashreplace"))
        return len(s)

    def flush(self):
        try:
            self.buffer.flush()
        except (BrokenPipeError, ValueError):
            pass


class Deadline:
    """The cell's wall-clock budget: SIGALRM raises KeyboardInterrupt in the cell, as IPython's SIGINT does.
    User code that swallows it or blocks the signal gets killed by the service after a grace period."""

    def __init__(self):
        self.armed = False
        self.fired = False

    def handler(self, signum, frame):
        if self.armed:
            self.armed = False
            self.fired = True
            raise KeyboardInterrupt

    def arm(self, seconds):
        self.fired = False
        self.armed = True
        signal.signal(signal.SIGALRM, self.handler)
        signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))

    def disarm(self):
        self.armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)


# ---- IPython-compatible pretty printing of the displayed value (IPython.lib.pretty's layout for builtins) ----

MAX_WIDTH = 79
MAX_SEQ_LENGTH = 1000  # IPython shows at most this many items, then "..."


class _Printer:
    """Greedy group/breakable layout: when a line would pass MAX_WIDTH, the outermost open group breaks all of
    its separators onto new lines. Reproduces IPython's output for lists, tuples, dicts and sets."""

    class Group:
        def __init__(self, depth):
            self.depth = depth
            self.breakables = collections.deque()
            self.want_break = False

    def __init__(self):
        self.out = []
        self.output_width = 0
        self.buffer = collections.deque()  # pending ("text", s) / ("break", sep, group, indentation)
        self.buffer_width = 0
        self.indentation = 0
        self.stack = [self.Group(0)]
        self.queue = [[self.stack[0]]]  # open groups by depth
        self.visiting = set()

    def _emit(self, item):
        if item[0] == "text":
            self.out.append(item[1])
            self.output_width += len(item[1])
        else:
            _, sep, group, indentation = item
            if group.want_break:
                self.out.append("\n" + " " * indentation)
                self.output_width = indentation
            else:
                self.out.append(sep)
                self.output_width += len(sep)
            group.breakables.popleft()  # breakables leave the buffer in order

    def _dequeue_outermost(self):
        # IPython's order, quirks included (they decide which groups break): the shallowest depth wins; groups
        # there without breakables are marked broken and dropped; among those with breakables the most recent
        # one breaks, and the entry removed from the queue is the one at the mirrored index.
        for stack in self.queue:
            for index, group in enumerate(reversed(stack)):
                if group.breakables:
                    del stack[index]
                    group.want_break = True
                    return group
            for group in stack:
                group.want_break = True
            del stack[:]
        return None

    def _break_outer_groups(self):
        while self.output_width + self.buffer_width > MAX_WIDTH:
            group = self._dequeue_outermost()
            if group is None:
                return
            while group.breakables:
                item = self.buffer.popleft()
                self.buffer_width -= len(item[1])
                self._emit(item)
            while self.buffer and self.buffer[0][0] == "text":
                item = self.buffer.popleft()
                self.buffer_width -= len(item[1])
                self._emit(item)

    def text(self, s):
        if self.buffer:
            self.buffer.append(("text", s))
            self.buffer_width += len(s)
            self._break_outer_groups()
        else:
            self.out.append(s)
            self.output_width += len(s)

    def breakable(self, sep=" "):
        group = self.stack[-1]
        if group.want_break:
            self.flush()
            self.out.append("\n" + " " * self.indentation)
            self.output_width = self.indentation
            self.buffer_width = 0
        else:
            item = ("break", sep, group, self.indentation)
            group.breakables.append(item)
            self.buffer.append(item)
            self.buffer_width += len(sep)
            self._break_outer_groups()

    def begin(self, indent, opening):
        if opening:
            self.text(opening)
        group = self.Group(self.stack[-1].depth + 1)
        self.stack.append(group)
        while len(self.queue) <= group.depth:
            self.queue.append([])
        self.queue[group.depth].append(group)
        self.indentation += indent

    def end(self, dedent, closing):
        self.indentation -= dedent
        group = self.stack.pop()
        if not group.breakables and group in self.queue[group.depth]:
            self.queue[group.depth].remove(group)
        if closing:
            self.text(closing)

    def flush(self):
        for item in self.buffer:
            self._emit(item)
        self.buffer.clear()
        self.buffer_width = 0

    def _items(self, items, show):
        for i, item in enumerate(items):
            if i:
                self.text(",")
                self.breakable()
            if i == MAX_SEQ_LENGTH:
                self.text("...")
                return
            show(item)

    def _key_value(self, pair):
        self.pretty(pair[0])
        self.text(": ")
        self.pretty(pair[1])

    def pretty(self, obj):
        kind = type(obj)
        if kind in (list, tuple, dict, set, frozenset) and id(obj) in self.visiting:
            brackets = {list: "[...]", tuple: "(...)", dict: "{...}", set: "{...}", frozenset: "frozenset({...})"}
            self.text(brackets[kind])
            return
        self.visiting.add(id(obj))
        try:
            self._pretty_value(obj, kind)
        finally:
            self.visiting.discard(id(obj))

    def _pretty_value(self, obj, kind):
        if kind in (list, tuple):
            opening, closing = ("[", "]") if kind is list else ("(", ")")
            if kind is tuple and len(obj) == 1:
                closing = ",)"
            self.begin(1, opening)
            self._items(obj, self.pretty)
            self.end(1, closing)
        elif kind is dict:
            self.begin(1, "{")
            self._items(obj.items(), self._key_value)
            self.end(1, "}")
        elif kind in (set, frozenset) and obj:
            items = obj if len(obj) >= MAX_SEQ_LENGTH else _sorted_for_display(obj)
            prefix = "frozenset(" if kind is frozenset else ""
            self.begin(len(prefix) + 1, prefix + "{")
            self._items(items, self.pretty)
            self.end(len(prefix) + 1, "})" if prefix else "}")
        else:
            self.text(repr(obj))

    def getvalue(self):
        self.flush()
        return "".join(self.out)


def _sorted_for_display(items):
    # Some order beats none: natural order, else by str(), else as iterated (what IPython shows for sets).
    try:
        return sorted(items)
    except Exception:
        try:
            return sorted(items, key=str)
        except Exception:
            return list(items)


def pretty(value):
    printer = _Printer()
    printer.pretty(value)
    return printer.getvalue()


class Session:
    def __init__(self):
        self.namespace = {"__name__": "__main__", "__builtins__": builtins}
        self.execution_count = 0
        self.deadline = Deadline()
        self.stdout = CappedText(1)
        self.stderr = CappedText(2)
        sys.stdout, sys.stderr = self.stdout, self.stderr
        sys.displayhook = self.displayhook

    def displayhook(self, value):
        if value is None:
            return
        builtins._ = value
        text = pretty(value)
        prompt = f"Out[{self.execution_count}]: "
        self.stdout.write(prompt + ("\n" if "\n" in text else "") + text + "\n")

    # ---- tracebacks in IPython's Plain layout ----

    def _frame_lines(self, tb):
        lines = []
        previous, repeats = None, 0
        for frame in traceback.extract_tb(tb):
            key = (frame.filename, frame.lineno, frame.name)
            if key == previous:
                repeats += 1
                if repeats > 2:
                    continue
            else:
                if repeats > 2:
                    lines.append(f"    [... skipping similar frames: {previous[2]} at line {previous[1]} "
                                 f"({repeats - 2} times)]")
                previous, repeats = key, 0
            if frame.filename.startswith("<ipython-input-"):
                where = f"  File {frame.filename}:{frame.lineno}"
                if frame.name != "<module>":
                    where += f" in {frame.name}"
            else:
                where = f"  File {frame.filename}:{frame.lineno} in {frame.name}"
            lines.append(where)
            source = linecache.getline(frame.filename, frame.lineno).strip()
            if source:
                lines.append(f"    {source}")
        if repeats > 2:
            lines.append(f"    [... skipping similar frames: {previous[2]} at line {previous[1]} "
                         f"({repeats - 2} times)]")
        return lines

    def _exception_lines(self, exc, tb, seen):
        seen.add(id(exc))
        lines = []
        if exc.__cause__ is not None and id(exc.__cause__) not in seen:
            lines += self._exception_lines(exc.__cause__, exc.__cause__.__traceback__, seen)
            lines += ["", "The above exception was the direct cause of the following exception:", ""]
        elif (exc.__context__ is not None and not exc.__suppress_context__ and id(exc.__context__) not in seen):
            lines += self._exception_lines(exc.__context__, exc.__context__.__traceback__, seen)
            lines += ["", "During handling of the above exception, another exception occurred:", ""]
        if isinstance(exc, SyntaxError) and tb is None:
            return lines + self._syntax_error_lines(exc)
        lines.append("Traceback (most recent call last):")
        lines += self._frame_lines(tb)
        lines += "".join(traceback.format_exception_only(type(exc), exc)).rstrip("\n").split("\n")
        return lines

    def _syntax_error_lines(self, exc):
        body = traceback.format_exception_only(type(exc), exc)
        text = "".join(body).rstrip("\n").split("\n")
        # Python says `  File "<ipython-input-…>", line 2`; IPython says `  File <ipython-input-…>:2`.
        if text and text[0].startswith("  File ") and exc.filename:
            text[0] = f"  File {exc.filename}:{exc.lineno}"
        return text

    def show_exception(self, exc, tb):
        text = "\n".join(self._exception_lines(exc, tb, set()))
        self.stdout.write(text + "\n\n")

    # ---- running code ----

    def run_cell(self, code):
        self.execution_count += 1
        digest = hashlib.sha1(code.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        filename = f"<ipython-input-{self.execution_count}-{digest}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        try:
            tree = ast.parse(code, filename, "exec")
            last = None
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                last = tree.body.pop()
            body = compile(tree, filename, "exec")
            tail = compile(ast.Interactive([last]), filename, "single") if last is not None else None
        except (SyntaxError, ValueError) as exc:
            self.show_exception(exc, None)
            return "error"
        try:
            exec(body, self.namespace)
            if tail is not None:
                exec(tail, self.namespace)
            return "completed"
        except SystemExit as exc:
            self.stdout.write("An exception has occurred, use %tb to see the full traceback.\n")
            self.stdout.write("".join(traceback.format_exception_only(type(exc), exc)) + "\n")
            self.stderr.write("UserWarning: To exit: use 'exit', 'quit', or Ctrl-D.\n")
            return "error"
        except KeyboardInterrupt as exc:
            if self.deadline.fired:
                return "interrupted"
            self.show_exception(exc, exc.__traceback__.tb_next)
            return "error"
        except BaseException as exc:  # noqa: B036 - everything the cell raises is the cell's business
            self.show_exception(exc, exc.__traceback__.tb_next)
            return "error"
        finally:
            self._exit_if_forked()

    def run_script(self, code, stdin_text):
        namespace = {"__name__": "__main__", "__builtins__": builtins}
        sys.stdin = io.StringIO(stdin_text)
        try:
            exec(compile(code, "<string>", "exec"), namespace)
        except SystemExit as exc:
            if exc.code is not None and not isinstance(exc.code, int):
                self.stderr.write(f"{exc.code}\n")
        except KeyboardInterrupt as exc:
            if self.deadline.fired:
                return "interrupted"
            self._print_python_traceback(exc)
        except BaseException as exc:  # noqa: B036
            self._print_python_traceback(exc)
        finally:
            self._exit_if_forked()
        return "completed"

    def _print_python_traceback(self, exc):
        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        self.stderr.write("".join(traceback.format_exception(type(exc), exc, tb)))

    def _exit_if_forked(self):
        # A child forked by user code must never come back to read the control channel.
        if os.getpid() != MAIN_PID:
            self.stdout.flush()
            self.stderr.flush()
            os._exit(0)

    def handle(self, request):
        self.stdout.left = self.stderr.left = int(request.get("cap", 1 << 20))
        self.deadline.arm(float(request.get("timeout", 10.0)))
        try:
            if request.get("mode") == "script":
                status = self.run_script(request.get("code", ""), request.get("stdin", ""))
            else:
                status = self.run_cell(request.get("code", ""))
        except KeyboardInterrupt:
            status = "interrupted" if self.deadline.fired else "error"
        finally:
            self.deadline.disarm()
        self.stdout.flush()
        self.stderr.flush()
        return {"status": status, "seq": request.get("seq")}


def write_reply(message):
    data = (json.dumps(message) + "\n").encode()
    while data:
        data = data[os.write(REPLIES_FD, data):]


def apply_rlimits(limits):
    for name, value in limits.items():
        resource.setrlimit(getattr(resource, name), (value, value))


def main():
    config = json.loads(sys.argv[1])
    sys.argv = ["-c"]
    for fd in (REQUESTS_FD, REPLIES_FD):
        os.set_inheritable(fd, False)
    apply_rlimits(config.get("rlimits", {}))
    for module in config.get("preimport", []):
        __import__(module)
    session = Session()
    requests = open(REQUESTS_FD, "rb", closefd=False)
    write_reply({"ready": True})
    while True:
        line = requests.readline()
        if not line:
            os._exit(0)
        try:
            request = json.loads(line)
        except ValueError:
            os._exit(3)
        try:
            reply = session.handle(request)
        except KeyboardInterrupt:
            reply = {"status": "interrupted", "seq": request.get("seq")}
        write_reply(reply)


main()
