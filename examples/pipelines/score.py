"""Scores generations against expected answers: the last \\boxed{...} of each completion vs expected_answer.

Usage: score.py PROBLEMS.jsonl GENERATIONS.jsonl OUT.json  (rows joined on "id"). Plain string comparison after
stripping spaces and a trailing ".0"; `qed eval` does real equivalence grading once it lands."""
import json
import sys


def last_boxed(text: str):
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def normalize(answer: str) -> str:
    answer = answer.replace(" ", "").replace(",", "")
    return answer[:-2] if answer.endswith(".0") else answer


def main(problems_path, generations_path, out_path):
    expected = {}
    with open(problems_path) as f:
        for line in f:
            row = json.loads(line)
            expected[row["id"]] = str(row["expected_answer"])
    correct = total = 0
    with open(generations_path) as f:
        for line in f:
            row = json.loads(line)
            if row["id"] not in expected:
                continue
            total += 1
            answer = last_boxed(row.get("text", ""))
            correct += answer is not None and normalize(answer) == normalize(expected[row["id"]])
    with open(out_path, "w") as f:
        json.dump({"problems": total, "correct": correct, "accuracy": correct / total if total else 0.0}, f)
        f.write("\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
