#!/usr/bin/env python3
"""Writes tests/tokenizer/corpus.jsonl: strings that stress byte-exact tokenizer parity with HF `tokenizers`.

Every line is {"id": str, "category": str, "text": str} or, for byte strings that are not valid UTF-8 (which JSON
cannot carry), {"id", "category": "invalid_utf8", "bytes_b64": str}. Hand-written cases cover what tokenizers get
wrong (LaTeX, code indentation, CJK, emoji ZWJ sequences, scripts, whitespace runs, digits, contractions,
special-token text, NFC-changing input, very long words); seeded random strings add breadth. Deterministic:
rerunning rewrites the same file.
"""

import base64
import json
import pathlib
import random

OUT = pathlib.Path(__file__).resolve().parents[1] / "tests" / "tokenizer" / "corpus.jsonl"

MATH = [
    r"What is $\frac{1}{2} + \frac{1}{3}$? The answer is $\boxed{\frac{5}{6}}$.",
    r"\boxed{42}",
    r"\boxed{\dfrac{\sqrt{3}}{2}}",
    r"Let $f(x) = x^2 - 4x + 4$. Then $f(x) = (x-2)^2 \ge 0$ for all real $x$.",
    r"$$\sum_{k=1}^{n} k^2 = \frac{n(n+1)(2n+1)}{6}$$",
    r"\begin{align*} a^2 + b^2 &= c^2 \\ 3^2 + 4^2 &= 5^2 \end{align*}",
    r"\left( \frac{a}{b} \right)^{-1} = \frac{b}{a}",
    r"The probability is $\tfrac{3}{8}$, so $m+n = 11$.",
    r"$\int_0^{\pi} \sin x \, dx = 2$",
    r"$\lim_{x \to 0} \frac{\sin x}{x} = 1$",
    r"$\binom{10}{3} = 120$ and $10! = 3628800$.",
    r"Since $\gcd(12, 18) = 6$ and $\operatorname{lcm}(12,18)=36$, we get $\boxed{216}$.",
    r"$x \equiv 3 \pmod{7}$",
    r"$\mathbb{R}^n$, $\mathcal{O}(n \log n)$, $\mathrm{d}x$",
    r"$a_1, a_2, \ldots, a_{100}$ with $a_{n+1} = 2a_n + 1$",
    r"\[ \sqrt[3]{27} = 3 \]",
    r"$\vec{v} \cdot \vec{w} = |v||w|\cos\theta$",
    r"$\angle ABC = 90^\circ$ and $\triangle ABC \sim \triangle DEF$",
    r"$\{1, 2, 3\} \cup \{3, 4\} = \{1,2,3,4\}$",
    r"$0.\overline{3} = \frac{1}{3}$",
    r"Final Answer: The final answer is $\boxed{-\frac{7}{2}}$. I hope it is correct.",
    r"$$\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}^{-1} = \frac{1}{-2}\begin{pmatrix} 4 & -2 \\ -3 & 1 \end{pmatrix}$$",
    r"$\log_2 1024 = 10$, $\ln e^3 = 3$",
    r"$|x - 3| < 5 \iff -2 < x < 8$",
    r"$\displaystyle\prod_{p \le 10} p = 210$",
    "Solve $3x + 5 = 20$.\n\nSubtract 5: $3x = 15$.\nDivide by 3: $x = 5$.\n\nAnswer: $\\boxed{5}$",
    "Step 1: Compute $2^{10}$.\nStep 2: $2^{10} = 1024$.\n\n**Answer:** \\boxed{1024}",
    r"$\frac{d}{dx}\left[x^3\right] = 3x^2$",
    r"$\text{Area} = \pi r^2 = 25\pi \approx 78.54$",
    r"$$f(n)=\begin{cases} n/2 & n \text{ even} \\ 3n+1 & n \text{ odd}\end{cases}$$",
]

CODE = [
    "def f(x):\n    return x * 2\n",
    "import math\n\nprint(math.factorial(20))\n",
    "for i in range(10):\n\tif i % 2 == 0:\n\t\tprint(i)\n",
    "class Solver:\n    def __init__(self, n: int) -> None:\n        self.n = n\n\n    def run(self):\n        pass\n",
    "x = [i**2 for i in range(100) if i % 3 == 0]\nprint(sum(x))",
    "print(f\"{n!r:>10} = {value:.3f}\")",
    "from sympy import *\nx = symbols('x')\nprint(solve(x**2 - 4, x))",
    "@lru_cache(maxsize=None)\ndef fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "# comment with trailing spaces   \nvalue = 1  # inline\n",
    "if __name__ == \"__main__\":\n    main()\n",
    "s = 'don\\'t'\nt = \"it's\"\n",
    "lambda a, b: (a + b) // 2",
    "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    print(e)\nfinally:\n    pass",
    "<tool_call>\n```python\nprint(pow(3, 100, 1000))\n```\n</tool_call>",
    "```python\nfrom itertools import permutations\ncount = sum(1 for p in permutations(range(6)) if p[0] != 0)\nprint(count)\n```\n```output\n600\n```",
    "def gcd(a, b):\n    while b:\n        a, b = b, a % b\n    return a\n\n\n\nprint(gcd(48, 18))",
    "    indented_line = True\n        more_indented = True\n",
    "import numpy as np\nA = np.array([[1, 2], [3, 4]])\nprint(np.linalg.det(A))",
    "#include <cstdio>\nint main() { std::printf(\"%d\\n\", 42); return 0; }",
    "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name;",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}",
    "<div class=\"x\">&nbsp;&lt;tag&gt;</div>",
    "$ ./configure --prefix=/usr/local && make -j8 && sudo make install",
    "    return {k: v for k, v in sorted(d.items(), key=lambda kv: -kv[1])}",
    "x=1;y=2;z=x+y;print(z)",
    "result = a if a > b else b  # max\r\nprint(result)\r\n",
    "while True:\n    n += 1\n    if is_prime(n): break\n",
    "arr[i][j] = arr[i-1][j] + arr[i][j-1]",
    "assert abs(x - 0.1 + 0.2) < 1e-9, 'float'",
    "print(2**64 - 1)  # 18446744073709551615",
]

CJK = [
    "你好，世界！", "数学是科学的语言。", "求解方程 $x^2 = 4$ 的所有实数解。", "答案是 \\boxed{12}。",
    "今日はいい天気ですね。", "カタカナとひらがなと漢字", "東京タワーは333メートルです。", "안녕하세요, 세계!",
    "한국어 문장과 English mixed 텍스트", "中文English混合123文本", "ＡＢＣ１２３　全角文字", "「引用」と『二重引用』",
    "一二三四五六七八九十百千万亿", "𠮷野家の𩸽", "繁體中文與简体中文", "。、！？：；（）【】",
    "ｶﾀｶﾅ半角", "조선말 대사전", "我们有3个苹果和5个梨，一共8个。", "ぁあぃいぅうぇえぉお",
]

EMOJI = [
    "👍", "👍🏽", "👍🏿👍🏻", "👨‍👩‍👧‍👦", "👩🏽‍💻 coding", "🏳️‍🌈", "🇺🇸🇯🇵🇩🇪", "1️⃣2️⃣3️⃣", "❤️ vs ❤",
    "I ❤️ math 🧮➕➖✖️➗", "🎉🎉🎉🎉🎉", "😀😃😄😁😆😅😂🤣", "🧑‍🤝‍🧑", "👁️‍🗨️", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "a😀b😀c",
    "emoji at end 🚀", "🚀 emoji at start", "x²+y²=z² ✓ ✗ ★ ☆", "⚠️ warning", "👨🏾‍🦱👩🏼‍🦰", "🤷‍♂️🤷‍♀️",
]

SCRIPTS = [
    "مرحبا بالعالم", "الرياضيات ممتعة ١٢٣٤٥", "नमस्ते दुनिया", "गणित में २ + २ = ४", "สวัสดีชาวโลก",
    "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ", "שלום עולם", "Привет, мир! Ёжик в тумане.", "Γειά σου Κόσμε αβγδε",
    "Ελληνικά: π ≈ 3.14159", "Ǆǅǆ ǈ", "Tiếng Việt có dấu: Hà Nội", "ქართული ენა", "Հայերեն",
    "ᚠᚢᚦᚨᚱᚲ runes", "ꦧꦱꦗꦮ", "አማርኛ", "தமிழ் மொழி", "বাংলা ভাষা", "ខ្មែរ", "Ελλάδα vs ΕΛΛΆΔΑ",
    "İstanbul ıi İI", "Straße STRASSE ß ẞ", "ﬁnance ﬂow ﬀ", "Ωmega Ω Å K", "𝔾𝕠𝕠𝕕 𝕞𝕠𝕣𝕟𝕚𝕟𝕘",
    "mixed عربي and English", "हिंदी123abc", "ไทย123", "ا ب ت ث",
]

WHITESPACE = [
    " ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", "\n\n\n\n\n", "\r\n", "\r\n\r\n", "\r", " \n ",
    "trailing spaces   ", "   leading spaces", "a  b   c    d", "tab\tseparated\tvalues", "a\n\nb\n\n\nc",
    "line1\r\nline2\r\n", "  \t  \n  \t\n", "word \n", "word\n ", "x\u00a0y\u00a0\u00a0z", "x\u3000y",
    "a\u2028b\u2029c", "a\u0085b", "a\u180eb", "a\u180e\u180e b", "a\u200bb\u200b", "a\ufeffb",
    "a\u2000\u2001\u2002b", "a\u202f\u205fb", "\x0b\x0c vertical tab and form feed", "a\x1c\x1d\x1e\x1fb",
    " " * 50, "\n" * 30, "\t" * 17, " \t" * 20, "end with newline\n", "   \n\n   mixed   \n",
    "if x:\n        deep\n    shallow\n", "a \u00a0 b",
]

DIGITS = [
    "0", "7", "12", "123", "1234", "12345", "123456789", "1234567890123456789012345678901234567890",
    "3.14159265358979323846264338327950288419716939937510", "1,234,567", "1,234,567.89", "1.234.567,89",
    "1_000_000", "1 000 000", "−42 and -42", "+1 (555) 123-4567", "2024-03-15T12:34:56Z", "1e10 1E-5 6.02e23",
    "0x1F 0b1010 0o17", "50% of 80 is 40", "$1,000.00 and €2.50 and ¥300", "10^{18}", "99.999%",
    "½ ¼ ¾ ⅓ ²³ ₁₂", "١٢٣ ٤٥٦", "४२", "௧௨௩", "Ⅻ ⅻ Ⅳ", "123abc456def", "v1.2.3-rc.4",
    "9" * 100, "1234567890" * 20, "12.5 + 7.5 = 20", "3/4 = 0.75",
]

CONTRACTIONS = [
    "it's", "It'S", "they've", "THEY'VE", "we'll", "WE'LL", "We'Ll", "I'm", "I'M", "you're", "YOU'RE",
    "he'd", "HE'D", "don't", "DON'T", "can't", "won't've", "y'all'd've", "'s 't 're 've 'm 'll 'd",
    "'S 'T 'RE 'VE 'M 'LL 'D", "x'ſ", "the cat's toy", "it’s curly", "rock 'n' roll", "''quoted''",
    "O'Brien's", "'tis", "students' books", "'hello'", "'ll'll'll",
]

SPECIAL = [
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<tool_call>", "</tool_call>", "<think>", "</think>",
    "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>user<|end_header_id|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "text<|im_end|>more", "<|im_start|><|im_end|>", "<|im_start|> spaced <|im_end|>", " <|im_start|>",
    "<|im_sta", "<|im_start|", "im_start|>", "<<|im_start|>>", "<|IM_START|>", "<tool_call>{\"name\": \"f\"}</tool_call>",
    "<tool_call>\n{\"name\": \"python\", \"arguments\": {\"code\": \"print(1)\"}}\n</tool_call>",
    "<think>\nLet me think.\n</think>\n\nThe answer is 4.", "<|begin_of_text|>Hello", "Hello<|end_of_text|>",
    "<|reserved_special_token_5|>", "<|reserved_special_token_250|>", "<|finetune_right_pad_id|>",
    "<|python_tag|>print(1)<|eom_id|>", "<|fim_prefix|>def<|fim_suffix|>pass<|fim_middle|>",
    "<|vision_start|><|image_pad|><|vision_end|>", "<tool_response>\n42\n</tool_response>",
    "a<tool_call>b</tool_call>c", "<|im_end|><|im_end|><|im_end|>", "<think></think>", "</think >",
    "<|endoftext|><|begin_of_text|>", "<|box_start|>(1,2)<|box_end|>", "<s>[INST] hi [/INST]</s>",
    # The tiny test tokenizer's added tokens: lstrip/rstrip, single_word, normalized, content with a space.
    "a <mask>  b", "a\t\u00a0<mask>\u3000\nb", "<mask><mask>", "x [W] y", "x[W] y", "[W]", "[W]x", "é[W]",
    "cafe\u0301 and café", "<my token>", "<my token><my token>", "<my  token>",
]

NFC = [
    "cafe\u0301", "Cafe\u0301 au lait", "A\u030angstro\u0308m", "n\u0303", "Pok\u00e9mon vs Poke\u0301mon",
    "\u1100\u1161\u11a8", "\u1112\u1161\u11ab\u1100\u1173\u11af", "\u2126", "\u212b", "\u212a",
    "a\u0323\u0302", "a\u0302\u0323", "e\u0301\u0301", "\u0301 leading combining mark", "x\u0308\u0304",
    "o\u0308 u\u0308 a\u0308", "\u00c5 vs A\u030a", "\u1e9b\u0323", "\u0958\u0959", "\u2000\u2001",
    "\uf900\uf901", "\u0344", "\u1f71", "\u0387", "\u037e", "\u2329\u232a", "Zo\u00eb Zoe\u0308",
    "\u0e33 \u0e4d\u0e32", "\u0915\u093c", "i\u0307\u0301",
]


def long_words() -> list[str]:
    return [
        "a" * 1000, "ab" * 1500, "abc" * 700, "hello" * 300, "x" * 10000,
        "Pneumonoultramicroscopicsilvicovolcanoconiosis", "supercalifragilisticexpialidocious" * 20,
        "https://example.com/" + "path/" * 100 + "?q=" + "v" * 200,
        "QmFzZTY0IGVuY29kZWQgYmxvYiB3aXRoIG5vIHNwYWNlcw" * 30, "-" * 500, "=" * 300 + ">",
        "中" * 2000, "😀" * 500, "ä" * 1500, "e\u0301" * 400, "0" * 5000, "aaaa bbbb " * 500,
    ]


MISC = [
    "", "a", "A", "!", "?", ".", ",", "Hello, world!", "hello world", "Hello World", "HELLO WORLD",
    "The quick brown fox jumps over the lazy dog.", "!!!???...", "...", "—–-", "“smart quotes” and ‘single’",
    "« guillemets » ‹ › „low“", "a\x00b", "\x01\x02\x03", "\x7f", "ctrl\x08\x1bchars", "\ufffd",
    "replacement \ufffd char \ufffd\ufffd", "\U0010ffff\U000e0001", "\ue000 private use", "# Markdown\n\n* item\n* item 2\n",
    "**bold** _italic_ `code`", "| a | b |\n|---|---|\n| 1 | 2 |", "user@example.com", "https://huggingface.co/docs",
    "C:\\Users\\name\\file.txt", "a/b/c.d", "@mention #hashtag", "~`!@#$%^&*()_+-={}[]|\\:;\"'<>,.?/",
    "e.g. i.e. etc. Mr. Dr.", "ALLCAPS lowercase MiXeD", "    ", "tab\tand space mix \t \t",
]

SOLUTIONS = [
    "To find the remainder when $2^{100}$ is divided by 7, note that $2^3 = 8 \\equiv 1 \\pmod 7$. "
    "Since $100 = 3 \\cdot 33 + 1$, we get $2^{100} \\equiv 2 \\pmod 7$. The answer is $\\boxed{2}$.",
    "Let me compute this with code.\n<tool_call>\n```python\nfrom math import comb\nprint(comb(20, 10))\n```\n"
    "</tool_call>\n```output\n184756\n```\nSo there are $\\boxed{184756}$ ways.",
    "We have $x + y = 10$ and $xy = 21$. Then $x^2 + y^2 = (x+y)^2 - 2xy = 100 - 42 = 58$.\n\n"
    "Final answer: $\\boxed{58}$",
    "<think>\nOkay, so I need to find the number of positive divisors of 360. 360 = 2^3 * 3^2 * 5. "
    "So (3+1)(2+1)(1+1) = 24.\n</think>\n\nThe number of divisors is $\\boxed{24}$.",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?\n48/2 = 24\n48 + 24 = 72\n#### 72",
]


def random_strings(rng: random.Random) -> list[tuple[str, str]]:
    blocks = [
        (0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF), (0x900, 0x97F),
        (0xE00, 0xE7F), (0x1100, 0x11FF), (0x2000, 0x206F), (0x2100, 0x22FF), (0x3000, 0x30FF),
        (0x4E00, 0x4FFF), (0xAC00, 0xAD00), (0xFF00, 0xFFEF), (0x1F300, 0x1F6FF), (0x1F900, 0x1F9FF),
        (0x300, 0x36F),
    ]
    out = []
    for i in range(150):
        n = rng.randint(1, 60)
        chars = []
        for _ in range(n):
            r = rng.random()
            if r < 0.45:
                chars.append(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 '.,\n\t"))
            else:
                lo, hi = rng.choice(blocks)
                chars.append(chr(rng.randint(lo, hi)))
        out.append((f"random-{i}", "".join(chars)))
    words = ["the", "of", "and", "x", "=", "\\frac", "{", "}", "$", "42", "prime", "  ", "\n", "'s", "'LL",
             "<|im_start|>", "<tool_call>", "é", "e\u0301", "😀", "中文", "\t", "1,000", "--", "(", ")", ":"]
    for i in range(80):
        out.append((f"random-words-{i}", "".join(rng.choice(words) + rng.choice(["", " ", " ", "\n"])
                                                  for _ in range(rng.randint(1, 40)))))
    return out


INVALID = [
    b"\xe2\x82", b"\xff", b"\xfe\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf0\x9f\x98",
    b"\x80\x80\x80", b"abc\xe2\x82def", b"caf\xe9", b"\xf0\x9f\x98\x80\xf0\x9f", b"\xe0\x80\x80",
    b"ok \xc3 ok", b"\xe4\xbd\xa0\xe5\xa5", b"<|im_start|>\xff<|im_end|>", b"\xf8\x88\x80\x80\x80",
    b"\xc2\x41", b"tail\xf0\x9f\x8d",
]


def main() -> None:
    rng = random.Random(20251125)
    rows: list[dict] = []

    def add(category: str, items) -> None:
        for i, text in enumerate(items):
            rows.append({"id": f"{category}-{i}", "category": category, "text": text})

    add("math", MATH)
    add("code", CODE)
    add("cjk", CJK)
    add("emoji", EMOJI)
    add("scripts", SCRIPTS)
    add("whitespace", WHITESPACE)
    add("digits", DIGITS)
    add("contractions", CONTRACTIONS)
    add("special_text", SPECIAL)
    add("nfc", NFC)
    add("long_words", long_words())
    add("misc", MISC)
    add("solutions", SOLUTIONS)
    for key, text in random_strings(rng):
        rows.append({"id": key, "category": "random", "text": text})
    for i, raw in enumerate(INVALID):
        rows.append({"id": f"invalid_utf8-{i}", "category": "invalid_utf8",
                     "bytes_b64": base64.b64encode(raw).decode("ascii")})

    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "duplicate ids"
    with OUT.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=True) + "\n")
    print(f"wrote {len(rows)} rows to {OUT}")


if __name__ == "__main__":
    main()
