#!/usr/bin/env python3
"""Seeded generator of the demo model's synthetic math data (issue #12).

Every problem needs real computation (modular powers, factorials mod m, prime counts, ...). Each one gets two
solutions:
  * a tool-integrated (TIR) solution in the exact byte format OpenMath-Nemotron uses with NeMo-Skills' "openmath"
    code tags: a reasoning sentence, `<tool_call>\\nCODE\\n</tool_call>`, then the sandbox's output block
    "\\n```output\\nSTDOUT```\\n" (stdout is the real output of running CODE), then a final sentence with \\boxed{};
  * a plain solution that states the answer without code (what the model has to produce "in its head").

Train and held-out problems are split by a family parameter (a modulus, a bound, n, ...): a held-out problem's key
parameter never occurs in the train set, so held-out accuracy measures whether the model learned to write the code,
not whether it memorised answers.

Pure Python, no third-party imports, so it runs here and on the GPU machine alike:
    python3 tools/demo/make_data.py --out DIR [--seed 1234 --train 40000 --heldout 1000]
writes DIR/train.jsonl and DIR/heldout.jsonl, one problem per line.
"""
import argparse
import bisect
import contextlib
import functools
import io
import json
import math
import multiprocessing
import os
import pathlib
import random
import sys

# --- exact format of the big model (NeMo-Skills code_tags/openmath.yaml, format "qwen") -------------------------
CODE_BEGIN = "<tool_call>"
CODE_END = "</tool_call>"
CODE_OUTPUT_BEGIN = "\n```output\n"
CODE_OUTPUT_END = "```\n"

# --- prompts (NeMo-Skills prompt configs) ------------------------------------------------------------------------
# openmath/tir.yaml: the TIR prompt of the OpenMath-Nemotron models.
TIR_PROMPT = (
    "Solve the following math problem, integrating natural language reasoning with Python code executions.\n"
    "You may perform up to {total_code_executions} Python code calls to assist your reasoning.\n"
    "Make sure to put the answer (and only answer) inside \\boxed{{}}.\n\n{problem}")
# generic/math.yaml: the plain prompt; the demo model answers it without code.
PLAIN_PROMPT = "Solve the following math problem. Make sure to put the answer (and only answer) inside \\boxed{{}}.\n\n{problem}"

# Qwen2.5's chat template inserts this system message when the conversation has none.
QWEN_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def heldout_key(value: int) -> bool:
    """A key parameter value belongs to the held-out split iff it is 3 mod 7 (about 1/7 of each range)."""
    return value % 7 == 3


def format_output_block(stdout: str) -> str:
    """What the sandbox loop appends after `</tool_call>` (NeMo-Skills format_code_output, format "qwen")."""
    return CODE_OUTPUT_BEGIN + stdout + CODE_OUTPUT_END


def run_code(code: str) -> str:
    """Runs a solution's code in-process and returns its stdout (the generator's code is trusted and tiny;
    tests re-run it in a real python subprocess and compare)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(code, "<tool_call>", "exec"), {"__name__": "__main__"})
    return buf.getvalue()


# --- families -----------------------------------------------------------------------------------------------------
# Each family: sample(rng) -> params (with "key": the split parameter), answer(params) -> str computed here
# independently of the code, code(params) -> the Python in the tool call, and text templates.


class Family:
    name = ""
    questions: list = []
    intros: list = []
    finals: list = []
    plains: list = []

    def sample(self, rng):
        raise NotImplementedError

    def answer(self, p) -> str:
        raise NotImplementedError

    def code(self, p) -> str:
        raise NotImplementedError


class ModPow(Family):
    name = "modpow"
    questions = ["What is {a}^{b} mod {m}?", "Find the remainder when {a}^{b} is divided by {m}.",
                 "Compute ${a}^{{{b}}} \\bmod {m}$."]
    intros = ["The exponent is far too large to expand by hand, so I will use Python's modular exponentiation.",
              "Let me compute {a}^{b} modulo {m} with Python's built-in three-argument pow."]
    finals = ["So {a}^{b} mod {m} is \\boxed{{{ans}}}.", "The remainder is \\boxed{{{ans}}}."]
    plains = ["Reducing the powers of {a} modulo {m} in my head, the remainder is \\boxed{{{ans}}}."]

    def sample(self, rng):
        m = rng.randint(7, 2000)
        return dict(a=rng.randint(2, 99), b=rng.randint(10, 5000), m=m, key=m)

    def answer(self, p):
        return str(pow(p["a"], p["b"], p["m"]))

    def code(self, p):
        return f"print(pow({p['a']}, {p['b']}, {p['m']}))"


class FactorialMod(Family):
    name = "factorial_mod"
    questions = ["What is {n}! mod {m}?", "Find the remainder when {n}! is divided by {m}."]
    intros = ["{n}! is a huge number, so I will let Python compute it exactly and reduce it modulo {m}."]
    finals = ["So {n}! mod {m} is \\boxed{{{ans}}}.", "The remainder is \\boxed{{{ans}}}."]
    plains = ["Multiplying 1 through {n} modulo {m} step by step, the remainder is \\boxed{{{ans}}}."]

    def sample(self, rng):
        n = rng.randint(10, 300)
        m = rng.choice([q for q in _primes_below(20000) if q > n + 1])  # a prime > n, so the answer is not 0
        return dict(n=n, m=m, key=m)

    def answer(self, p):
        r = 1
        for k in range(2, p["n"] + 1):
            r = r * k % p["m"]
        return str(r)

    def code(self, p):
        return f"import math\nprint(math.factorial({p['n']}) % {p['m']})"


class DigitSumPower(Family):
    name = "digit_sum_power"
    questions = ["What is the sum of the digits of {a}^{b}?", "Find the digit sum of ${a}^{{{b}}}$."]
    intros = ["{a}^{b} has many digits, so I will compute it exactly in Python and add up its digits."]
    finals = ["The sum of the digits is \\boxed{{{ans}}}.", "So the digit sum of {a}^{b} is \\boxed{{{ans}}}."]
    plains = ["Estimating the number of digits of {a}^{b} and their average, the digit sum is \\boxed{{{ans}}}."]

    def sample(self, rng):
        b = rng.randint(20, 400)
        return dict(a=rng.randint(2, 30), b=b, key=b)

    def answer(self, p):
        v, s = p["a"] ** p["b"], 0
        while v:
            v, d = divmod(v, 10)
            s += d
        return str(s)

    def code(self, p):
        return f"print(sum(int(d) for d in str({p['a']} ** {p['b']})))"


class PrimeCount(Family):
    name = "prime_count"
    questions = ["How many primes are less than {n}?", "How many prime numbers are there below {n}?",
                 "Count the primes p with p < {n}."]
    intros = ["I will count the primes below {n} with a sieve of Eratosthenes in Python."]
    finals = ["There are \\boxed{{{ans}}} primes less than {n}.", "So the count is \\boxed{{{ans}}}."]
    plains = ["Using the estimate n / ln n for the number of primes below {n}, I get \\boxed{{{ans}}}."]

    MAX_N = 30000

    def sample(self, rng):
        n = rng.randint(100, self.MAX_N)
        return dict(n=n, key=n)

    def answer(self, p):
        return str(bisect.bisect_left(_primes_below(PrimeCount.MAX_N), p["n"]))

    def code(self, p):
        return (f"n = {p['n']}\n"
                "sieve = [True] * n\n"
                "sieve[0] = sieve[1] = False\n"
                "for i in range(2, int(n ** 0.5) + 1):\n"
                "    if sieve[i]:\n"
                "        sieve[i * i::i] = [False] * len(range(i * i, n, i))\n"
                "print(sum(sieve))")


class Gcd(Family):
    name = "gcd"
    questions = ["What is the greatest common divisor of {a} and {b}?", "Compute gcd({a}, {b})."]
    intros = ["I will run the Euclidean algorithm in Python with math.gcd."]
    finals = ["The greatest common divisor is \\boxed{{{ans}}}.", "So gcd({a}, {b}) = \\boxed{{{ans}}}."]
    plains = ["Comparing the factors of {a} and {b}, the greatest common divisor is \\boxed{{{ans}}}."]

    def sample(self, rng):
        g = rng.randint(2, 500)
        a, b = g * rng.randint(10, 2000), g * rng.randint(10, 2000)
        return dict(a=a, b=b, key=a + b)

    def answer(self, p):
        a, b = p["a"], p["b"]
        while b:
            a, b = b, a % b
        return str(a)

    def code(self, p):
        return f"import math\nprint(math.gcd({p['a']}, {p['b']}))"


class Lcm(Family):
    name = "lcm"
    questions = ["What is the least common multiple of {a} and {b}?", "Compute lcm({a}, {b})."]
    intros = ["I will compute the least common multiple in Python with math.lcm."]
    finals = ["The least common multiple is \\boxed{{{ans}}}.", "So lcm({a}, {b}) = \\boxed{{{ans}}}."]
    plains = ["Combining the prime factors of {a} and {b}, the least common multiple is \\boxed{{{ans}}}."]

    def sample(self, rng):
        a, b = rng.randint(12, 9999), rng.randint(12, 9999)
        return dict(a=a, b=b, key=a + b)

    def answer(self, p):
        a, b = p["a"], p["b"]
        return str(a * b // int(Gcd().answer(p)))

    def code(self, p):
        return f"import math\nprint(math.lcm({p['a']}, {p['b']}))"


class BaseConversion(Family):
    name = "base_conversion"
    questions = ["Write {n} in base {base}.", "What is the base-{base} representation of the decimal number {n}?"]
    intros = ["I will convert {n} to base {base} by repeated division in Python."]
    finals = ["In base {base}, {n} is written \\boxed{{{ans}}}.", "So the base-{base} representation is \\boxed{{{ans}}}."]
    plains = ["Dividing {n} repeatedly by {base} in my head, the digits are \\boxed{{{ans}}}."]

    def sample(self, rng):
        n = rng.randint(100, 10 ** 6)
        return dict(n=n, base=rng.randint(2, 9), key=n)

    def answer(self, p):
        n, base, s = p["n"], p["base"], ""
        while n:
            s = "0123456789"[n % base] + s
            n //= base
        return s

    def code(self, p):
        return (f"n, base = {p['n']}, {p['base']}\n"
                "digits = []\n"
                "while n > 0:\n"
                "    digits.append(str(n % base))\n"
                "    n //= base\n"
                "print(''.join(reversed(digits)))")


class Binomial(Family):
    name = "binomial"
    questions = ["How many ways are there to choose {k} objects from {n} distinct objects?",
                 "Compute $\\binom{{{n}}}{{{k}}}$.", "What is {n} choose {k}?"]
    intros = ["This is the binomial coefficient C({n}, {k}); I will compute it exactly with math.comb."]
    finals = ["There are \\boxed{{{ans}}} ways.", "So C({n}, {k}) = \\boxed{{{ans}}}."]
    plains = ["Multiplying out {n}!/({k}!({n}-{k})!) mentally, I get \\boxed{{{ans}}}."]

    def sample(self, rng):
        n = rng.randint(20, 60)
        k = rng.randint(3, n - 3)
        return dict(n=n, k=k, key=n * 61 + k)

    def answer(self, p):
        n, k, r = p["n"], p["k"], 1
        for i in range(k):
            r = r * (n - i) // (i + 1)
        return str(r)

    def code(self, p):
        return f"import math\nprint(math.comb({p['n']}, {p['k']}))"


class Derangements(Family):
    name = "derangements"
    questions = ["How many derangements of {n} objects are there?",
                 "In how many ways can {n} letters be put into their {n} envelopes so that no letter is in its own envelope?"]
    intros = ["I will count derangements with the recurrence D(k) = (k - 1)(D(k - 1) + D(k - 2)) in Python."]
    finals = ["The number of derangements is \\boxed{{{ans}}}.", "So D({n}) = \\boxed{{{ans}}}."]
    plains = ["Using D(n) close to n!/e, the number of derangements is \\boxed{{{ans}}}."]

    def sample(self, rng):
        n = rng.randint(5, 25)
        return dict(n=n, key=n)

    def answer(self, p):
        n = p["n"]
        return str(sum((-1) ** i * math.factorial(n) // math.factorial(i) for i in range(n + 1)))

    def code(self, p):
        return (f"n = {p['n']}\n"
                "d = [1, 0]\n"
                "for k in range(2, n + 1):\n"
                "    d.append((k - 1) * (d[-1] + d[-2]))\n"
                "print(d[n])")


class Diophantine(Family):
    name = "diophantine"
    questions = ["How many ordered pairs of positive integers (x, y) satisfy {a}x + {b}y = {c}?",
                 "Find the number of positive integer solutions (x, y) of the equation {a}x + {b}y = {c}."]
    intros = ["I will count the solutions by looping over x in Python and checking whether y is a positive integer."]
    finals = ["There are \\boxed{{{ans}}} solutions.", "So the number of pairs is \\boxed{{{ans}}}."]
    plains = ["Estimating the number of lattice points on the line {a}x + {b}y = {c}, I get \\boxed{{{ans}}}."]

    def sample(self, rng):
        c = rng.randint(100, 5000)
        while True:  # coprime coefficients, so that solutions exist for most c
            a, b = rng.randint(2, 25), rng.randint(2, 25)
            if math.gcd(a, b) == 1:
                return dict(a=a, b=b, c=c, key=c)

    def answer(self, p):
        a, b, c = p["a"], p["b"], p["c"]
        return str(sum(1 for y in range(1, c) if c - b * y > 0 and (c - b * y) % a == 0))

    def code(self, p):
        return (f"a, b, c = {p['a']}, {p['b']}, {p['c']}\n"
                "count = 0\n"
                "for x in range(1, c + 1):\n"
                "    rest = c - a * x\n"
                "    if rest > 0 and rest % b == 0:\n"
                "        count += 1\n"
                "print(count)")


class DivisorSum(Family):
    name = "divisor_sum"
    questions = ["What is the sum of all positive divisors of {n}?", "Compute sigma({n}), the sum of the divisors of {n}."]
    intros = ["I will add up the divisors of {n} in Python, pairing each d with {n} // d."]
    finals = ["The sum of the divisors is \\boxed{{{ans}}}.", "So sigma({n}) = \\boxed{{{ans}}}."]
    plains = ["Factoring {n} mentally and using the divisor-sum formula, I get \\boxed{{{ans}}}."]

    def sample(self, rng):
        n = rng.randint(100, 10 ** 6)
        return dict(n=n, key=n)

    def answer(self, p):
        n = p["n"]
        return str(_sigma(n))

    def code(self, p):
        return (f"n = {p['n']}\n"
                "total = 0\n"
                "for d in range(1, int(n ** 0.5) + 1):\n"
                "    if n % d == 0:\n"
                "        total += d\n"
                "        if d != n // d:\n"
                "            total += n // d\n"
                "print(total)")


class DivisorCount(Family):
    name = "divisor_count"
    questions = ["How many positive divisors does {n} have?", "Find the number of positive divisors of {n}."]
    intros = ["I will count the divisors of {n} in Python by trial division up to its square root."]
    finals = ["{n} has \\boxed{{{ans}}} positive divisors.", "So the number of divisors is \\boxed{{{ans}}}."]
    plains = ["Factoring {n} in my head and multiplying the exponents plus one, I get \\boxed{{{ans}}}."]

    def sample(self, rng):
        n = rng.randint(100, 10 ** 6)
        return dict(n=n, key=n)

    def answer(self, p):
        n, count, q = p["n"], 1, 2
        while q * q <= n:
            e = 0
            while n % q == 0:
                n //= q
                e += 1
            count *= e + 1
            q += 1
        return str(count * (2 if n > 1 else 1))

    def code(self, p):
        return (f"n = {p['n']}\n"
                "count = 0\n"
                "for d in range(1, int(n ** 0.5) + 1):\n"
                "    if n % d == 0:\n"
                "        count += 1 if d == n // d else 2\n"
                "print(count)")


class FibonacciMod(Family):
    name = "fibonacci_mod"
    questions = ["Let F_1 = F_2 = 1 and F_(k+1) = F_k + F_(k-1). What is F_{n} mod {m}?",
                 "What is the remainder when the {n}th Fibonacci number is divided by {m}?"]
    intros = ["I will iterate the Fibonacci recurrence modulo {m} in Python."]
    finals = ["So F_{n} mod {m} is \\boxed{{{ans}}}.", "The remainder is \\boxed{{{ans}}}."]
    plains = ["Looking for the period of the Fibonacci numbers modulo {m}, the remainder is \\boxed{{{ans}}}."]

    def sample(self, rng):
        m = rng.randint(10, 10 ** 4)
        return dict(n=rng.randint(50, 50000), m=m, key=m)

    def answer(self, p):
        def fib_pair(k):  # (F_k, F_{k+1}) mod m by fast doubling
            if k == 0:
                return 0, 1
            a, b = fib_pair(k // 2)
            c, d = a * (2 * b - a) % p["m"], (a * a + b * b) % p["m"]
            return (d, (c + d) % p["m"]) if k % 2 else (c, d)
        return str(fib_pair(p["n"])[0])

    def code(self, p):
        return (f"n, m = {p['n']}, {p['m']}\n"
                "a, b = 0, 1\n"
                "for _ in range(n):\n"
                "    a, b = b, (a + b) % m\n"
                "print(a)")


class Totient(Family):
    name = "totient"
    questions = ["How many integers from 1 to {n} are relatively prime to {n}?", "Compute Euler's totient phi({n})."]
    intros = ["I will count the k from 1 to {n} with gcd(k, {n}) = 1 in Python."]
    finals = ["So phi({n}) = \\boxed{{{ans}}}.", "There are \\boxed{{{ans}}} such integers."]
    plains = ["Using the product formula for phi over the prime factors of {n}, I get \\boxed{{{ans}}}."]

    def sample(self, rng):
        n = rng.randint(100, 50000)
        return dict(n=n, key=n)

    def answer(self, p):
        n, result, q = p["n"], p["n"], 2
        while q * q <= n:
            if n % q == 0:
                while n % q == 0:
                    n //= q
                result -= result // q
            q += 1
        return str(result - result // n if n > 1 else result)

    def code(self, p):
        return (f"import math\n"
                f"n = {p['n']}\n"
                "print(sum(1 for k in range(1, n + 1) if math.gcd(k, n) == 1))")


class FactorialDigitSum(Family):
    name = "factorial_digit_sum"
    questions = ["What is the sum of the digits of {n}!?", "Find the digit sum of {n} factorial."]
    intros = ["{n}! has too many digits to handle by hand, so I will compute it in Python and sum its digits."]
    finals = ["The digit sum of {n}! is \\boxed{{{ans}}}.", "So the sum of the digits is \\boxed{{{ans}}}."]
    plains = ["Estimating the digits of {n}! and their average, the digit sum is \\boxed{{{ans}}}."]

    def sample(self, rng):
        n = rng.randint(10, 400)
        return dict(n=n, key=n)

    def answer(self, p):
        return str(sum(map(int, str(math.factorial(p["n"])))))

    def code(self, p):
        return f"import math\nprint(sum(int(d) for d in str(math.factorial({p['n']}))))"


@functools.lru_cache(maxsize=None)
def _primes_below(n: int) -> list:
    """Primes below n by trial division against the smaller primes (independent of the sieve in the code)."""
    primes = []
    for k in range(2, n):
        if all(k % q for q in primes if q * q <= k):
            primes.append(k)
    return primes


def _sigma(n: int) -> int:
    total, q, m = 1, 2, n
    while q * q <= m:
        if m % q == 0:
            term, power = 1, 1
            while m % q == 0:
                m //= q
                power *= q
                term += power
            total *= term
        q += 1
    return total * (m + 1) if m > 1 else total


FAMILIES = [ModPow(), FactorialMod(), DigitSumPower(), PrimeCount(), Gcd(), Lcm(), BaseConversion(), Binomial(),
            Derangements(), Diophantine(), DivisorSum(), DivisorCount(), FibonacciMod(), Totient(),
            FactorialDigitSum()]


FAMILY_BY_NAME = {f.name: f for f in FAMILIES}


def draw_problem(family: Family, rng: random.Random, split: str) -> dict:
    """The cheap, sequential part: parameters (redrawn until their key falls in `split`), problem text and the
    choice of solution templates."""
    while True:
        p = family.sample(rng)
        if heldout_key(p["key"]) == (split == "heldout"):
            break
    fmt = {k: v for k, v in p.items() if k != "key"}
    return dict(family=family.name, split=split, split_key=p["key"], params=fmt,
                problem=rng.choice(family.questions).format(**fmt),
                templates=[rng.randrange(len(family.intros)), rng.randrange(len(family.finals)),
                           rng.randrange(len(family.plains))])


def realize_problem(draw: dict) -> dict:
    """The expensive part: computes the answer independently, runs the code for its real stdout, writes both
    solutions. Depends only on `draw`, so it can run in worker processes."""
    family = FAMILY_BY_NAME[draw["family"]]
    fmt = draw["params"]
    intro, final, plain = draw["templates"]
    answer = family.answer(fmt)
    code = family.code(fmt)
    stdout = run_code(code)
    tir = (family.intros[intro].format(**fmt) + "\n\n" + CODE_BEGIN + "\n" + code + "\n" + CODE_END
           + format_output_block(stdout) + family.finals[final].format(ans=answer, **fmt))
    return dict(id=draw["id"], family=draw["family"], split=draw["split"], split_key=draw["split_key"], params=fmt,
                problem=draw["problem"],
                expected_answer=answer, code=code, code_output=stdout, tir_solution=tir,
                plain_solution=family.plains[plain].format(ans=answer, **fmt))


def generate(seed: int, n_train: int, n_heldout: int, jobs: int = 1) -> dict:
    """Returns {"train": [...], "heldout": [...]}; families are interleaved round-robin; duplicate problem texts
    are dropped. The result depends on the seed and counts only, not on `jobs`."""
    rng = random.Random(seed)
    draws = {}
    for split, count in (("train", n_train), ("heldout", n_heldout)):
        seen, rows, i = set(), [], 0
        while len(rows) < count:
            d = draw_problem(FAMILIES[i % len(FAMILIES)], rng, split)
            i += 1
            if d["problem"] in seen:
                continue
            seen.add(d["problem"])
            d["id"] = f"{split}-{len(rows):06d}"
            rows.append(d)
        draws[split] = rows
    if jobs > 1:
        with multiprocessing.Pool(jobs) as pool:
            return {split: pool.map(realize_problem, rows, chunksize=64) for split, rows in draws.items()}
    return {split: [realize_problem(d) for d in rows] for split, rows in draws.items()}


# --- chat formatting shared with train.py -------------------------------------------------------------------------


def chat_messages(row: dict, mode: str, system, total_code_executions: int = 8) -> list:
    """The conversation for one row. mode: "tir" (openmath/tir prompt), "bare" (the problem alone, answered with
    tools, as `qed run "problem"` may send it) or "plain" (generic/math prompt, answered without tools).
    system: None (the template's default system message) or a string ("" is what NeMo-Skills sends)."""
    if mode == "tir":
        user, answer = TIR_PROMPT.format(total_code_executions=total_code_executions, problem=row["problem"]), row["tir_solution"]
    elif mode == "bare":
        user, answer = row["problem"], row["tir_solution"]
    elif mode == "plain":
        user, answer = PLAIN_PROMPT.format(problem=row["problem"]), row["plain_solution"]
    else:
        raise ValueError(f"unknown mode {mode!r}")
    messages = [] if system is None else [{"role": "system", "content": system}]
    return messages + [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


def render_chatml(messages: list, add_generation_prompt: bool = False) -> str:
    """Qwen2.5's chat template for plain text messages (no tools), written out so train.py needs no jinja2;
    tests/python/test_demo_data.py checks it against the shipped template."""
    out = ""
    if not messages or messages[0]["role"] != "system":
        out += "<|im_start|>system\n" + QWEN_DEFAULT_SYSTEM + "<|im_end|>\n"
    for m in messages:
        out += "<|im_start|>" + m["role"] + "\n" + m["content"] + "<|im_end|>\n"
    if add_generation_prompt:
        out += "<|im_start|>assistant\n"
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=pathlib.Path)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--train", type=int, default=40000)
    ap.add_argument("--heldout", type=int, default=1500)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (same output for any)")
    args = ap.parse_args(argv)
    data = generate(args.seed, args.train, args.heldout, args.jobs)
    args.out.mkdir(parents=True, exist_ok=True)
    for split, rows in data.items():
        with open(args.out / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{split}: {len(rows)} problems -> {args.out / (split + '.jsonl')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
