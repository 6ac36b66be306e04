"""Grading a model's answer against a gold answer, by the gold row's ``metric``.

Supported: ``em_mc`` (multiple choice: the letter the answer commits to), ``GSM8K`` (last number vs the number
after ``####``), ``MATH`` (``\\boxed{}`` or last number vs the gold's last ``\\boxed{}``, numbers compared as
numbers), ``f1_score`` (SQuAD token F1, fractional) and ``exact_match``.
Not supported, skipped with a message:
``code_eval`` (needs a sandbox to run the model's code against the tests) and ``commongen_coverage``
(needs a lemmatiser to count covered concepts). Any other metric is an error.
"""

from __future__ import annotations

import ast
import re
import string
from collections import Counter
from collections.abc import Callable
from typing import Any

SUPPORTED = ("em_mc", "GSM8K", "MATH", "f1_score", "exact_match")
UNSUPPORTED = {
    "code_eval": "needs a sandbox to execute generated code against the tests",
    "commongen_coverage": "needs a lemmatiser to count covered concepts",
}
LETTERS = "ABCDEFGHIJ"
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def parse_choices(choices: Any) -> list[str]:
    """Gold ``choices``: a list, or {'text': [...], 'label(s)': [...]}, maybe a Python-literal string."""
    if isinstance(choices, str):
        try:
            choices = ast.literal_eval(choices)
        except (ValueError, SyntaxError):
            return []
    if isinstance(choices, dict):
        choices = choices.get("text", [])
    return [str(c) for c in choices] if isinstance(choices, list | tuple) else []


def prompt_for(query: str, metric: str, choices: Any) -> str:
    if metric == "em_mc":
        options = parse_choices(choices)
        listed = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(options[: len(LETTERS)]))
        body = f"{query}\n\n{listed}" if listed else query
        return f"{body}\n\nAnswer with the letter of the correct option, e.g. 'Answer: A'."
    if metric in ("GSM8K", "MATH"):
        return f"{query}\n\nSolve it step by step and put the final answer in \\boxed{{}}."
    return f"{query}\n\nAnswer briefly."


def _letter(answer: str, n_options: int) -> str | None:
    valid = LETTERS[: max(n_options, 4)]
    for pattern in (
        rf"answer\s*(?:is|:)?\s*\(?([{valid}])\b",
        rf"^\s*\(?([{valid}])[).:\s]",
        rf"\(([{valid}])\)",
        rf"\b([{valid}])\b",
    ):
        match = re.search(
            pattern, answer, flags=re.IGNORECASE | re.MULTILINE if "answer" in pattern else re.MULTILINE
        )
        if match:
            return match.group(1).upper()
    return None


def _number(text: str) -> float | None:
    found = NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def _boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def _math_norm(text: str) -> str:
    text = text.replace("\\left", "").replace("\\right", "").replace("\\!", "").replace("dfrac", "frac")
    text = text.replace("tfrac", "frac").replace("$", "").replace("\\%", "").replace(" ", "")
    return text.rstrip(".")


def grade_mc(answer: str, gold: str, choices: Any) -> float:
    return float(_letter(answer, len(parse_choices(choices))) == gold.strip().upper())


def grade_gsm8k(answer: str, gold: str) -> float:
    target = _number(gold.split("####")[-1])
    boxed = _boxed(answer)
    pred = _number(boxed) if boxed is not None else _number(answer)
    return float(target is not None and pred is not None and abs(pred - target) < 1e-6)


def grade_math(answer: str, gold: str) -> float:
    target = _boxed(gold)
    target = target if target is not None else gold.strip()
    pred = _boxed(answer)
    if pred is None:
        number = _number(answer)
        pred = "" if number is None else f"{number:g}"
    t_num, p_num = _number(target), _number(pred)
    if t_num is not None and p_num is not None and re.fullmatch(r"[-\d.,\s$]+", target.strip()):
        return float(abs(t_num - p_num) < 1e-6)
    return float(_math_norm(pred) == _math_norm(target))


def _squad_tokens(text: str) -> list[str]:
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return [t for t in text.split() if t not in ("a", "an", "the")]


def f1(answer: str, gold: str) -> float:
    pred, ref = _squad_tokens(answer), _squad_tokens(gold)
    common = sum((Counter(pred) & Counter(ref)).values())
    if not pred or not ref or common == 0:
        return float(pred == ref)
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def grade_f1(answer: str, gold: str) -> float:
    golds: Any = gold
    if gold.startswith("["):
        try:
            golds = ast.literal_eval(gold)
        except (ValueError, SyntaxError):
            golds = gold
    options = [str(g) for g in golds] if isinstance(golds, list) else [str(golds)]
    return max(f1(answer, g) for g in options)


def grade_exact(answer: str, gold: str) -> float:
    return float(_squad_tokens(answer) == _squad_tokens(gold))


GRADERS: dict[str, Callable[[str, str, Any], float]] = {
    "em_mc": grade_mc,
    "GSM8K": lambda a, g, c: grade_gsm8k(a, g),
    "MATH": lambda a, g, c: grade_math(a, g),
    "f1_score": lambda a, g, c: grade_f1(a, g),
    "exact_match": lambda a, g, c: grade_exact(a, g),
}


def grade(metric: str, answer: str, gold: str, choices: Any = None) -> float:
    return GRADERS[metric](answer, gold, choices)
