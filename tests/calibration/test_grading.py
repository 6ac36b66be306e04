"""Graders by metric, on answers a model could really give."""

from __future__ import annotations

import pytest

from calibration.grading import grade, parse_choices


@pytest.mark.parametrize(
    ("metric", "answer", "gold", "choices", "expected"),
    [
        ("em_mc", "The answer is (C) Cambodia.", "C", "['Calcutta.', 'Bombay.', 'Cambodia.', 'Bali.']", 1.0),
        ("em_mc", "Answer: B", "C", "['a', 'b', 'c', 'd']", 0.0),
        ("em_mc", "D", "D", "{'text': ['1', '2', '3', '4'], 'labels': ['A', 'B', 'C', 'D']}", 1.0),
        ("GSM8K", "60 x 6 = 360, so \\boxed{360}", "so 360 girls.\n#### 360", None, 1.0),
        ("GSM8K", "There are 1,200 girls", "#### 360", None, 0.0),
        ("MATH", "so a = \\boxed{56}", "Thus $\\boxed{56}$ questions.", None, 1.0),
        ("MATH", "\\boxed{\\dfrac{1}{2}}", "$\\boxed{\\frac{1}{2}}$", None, 1.0),
        ("MATH", "1596", "1596", None, 1.0),
        ("exact_match", "Paris.", "paris", None, 1.0),
    ],
)
def test_grades(metric: str, answer: str, gold: str, choices: str | None, expected: float) -> None:
    assert grade(metric, answer, gold, choices) == expected


def test_f1_is_fractional() -> None:
    assert grade("f1_score", "March 9, 2018", "March 9, 2018") == 1.0
    assert 0 < grade("f1_score", "it came out on March 9", "March 9, 2018") < 1


def test_parse_choices_forms() -> None:
    assert parse_choices("{'label': ['A', 'B'], 'text': ['x', 'y']}") == ["x", "y"]
    assert parse_choices(["p", "q"]) == ["p", "q"]
    assert parse_choices("not a literal [") == []
