"""bench.ood_format's rewording rules: they remove the benchmarks' scaffolding, keep the question, and the augmented
calibration rows are copies of train rows only."""

from __future__ import annotations

import json
from pathlib import Path

from bench.ood_format import (
    TRAINED_VARIANTS,
    VARIANTS,
    augmented_rows,
    chat,
    eval_sample,
    in_domain_sample,
    read_rows,
    shorten,
    strip_format,
    variants,
)

ARC = "Question:Which gas do plants take in from the air for photosynthesis?\nAnswer:"
MMLU = ("A 43-year-old female presents with heat intolerance and weight loss. An MRI of the orbits will most likely "
        "reveal\nA. calcification of the orbit\nB. diffuse enlargement of the rectus muscles\nC. dilated ventricles\n"
        "D. lymphoma")
CMMLU = "马斯洛的需求层次理论中，最低层次的需求是\nA. 生理需求\nB. 安全需求\nC. 社交需求\nD. 尊重需求\n答案："
HUMANEVAL = '''

def prime_length(string):
    """Write a function that takes a string and returns True if the string
    length is a prime number or False otherwise
    Examples
    prime_length('Hello') == True
    """
'''
GSM8K = ("Mary has 5 green crayons and 8 blue crayons. She gives 3 green crayons to Becky. Then she buys 2 more. "
         "How many crayons does she have left?")


def test_strip_format_removes_the_scaffolding_and_keeps_the_question() -> None:
    assert strip_format(ARC) == "Which gas do plants take in from the air for photosynthesis?"
    assert strip_format(MMLU) == ("A 43-year-old female presents with heat intolerance and weight loss. An MRI of the "
                                  "orbits will most likely reveal")
    assert strip_format(CMMLU) == "马斯洛的需求层次理论中，最低层次的需求是"
    assert strip_format(HUMANEVAL) == ("Python function prime_length(string): Write a function that takes a string "
                                       "and returns True if the string length is a prime number or False otherwise")
    assert strip_format(GSM8K) == GSM8K  # plain text is left alone


def test_shorten_keeps_the_core_question() -> None:
    assert shorten(GSM8K) == "Then she buys 2 more. How many crayons does she have left?"
    assert shorten(MMLU) == "An MRI of the orbits will most likely reveal"
    assert shorten(ARC) == "Which gas do plants take in from the air for photosynthesis?"
    assert shorten(HUMANEVAL).startswith("Python function prime_length(string): Write a function")
    assert len(shorten("word " * 100 + "end.").split()) == 40


def test_chat_is_deterministic_and_keeps_the_text() -> None:
    assert chat("What is 2+2?", "row-1") == chat("What is 2+2?", "row-1")
    assert "What is 2+2?" in chat("What is 2+2?", "row-1")
    assert len({chat("q", f"row-{i}") for i in range(50)}) > 1


def test_the_rules_strip_every_in_domain_row_of_the_shared_data(shared_data: Path) -> None:
    rows = read_rows(shared_data / "routing" / "routerdc_7model.jsonl")
    sample = in_domain_sample(rows, 50)
    assert {r["domain"] for r in sample} == {r["domain"] for r in rows if r["split"] == "test"}
    for row in sample:
        forms = variants(row)
        assert set(forms) == set(VARIANTS)
        for name in ("stripped", "short", "chat"):
            text = forms[name]
            assert text.strip(), (row["id"], name)
            assert not text.startswith("Question:") and not text.endswith(("Answer:", "答案：")), (row["id"], name)
            assert "\nA. " not in text and "\nB. " not in text, (row["id"], name)
            assert ">>>" not in text and '"""' not in text, (row["id"], name)


def test_augmented_rows_are_train_rows_and_their_copies(shared_data: Path) -> None:
    rows = [r for r in read_rows(shared_data / "routing" / "routerdc_7model.jsonl")][:3000]

    out = augmented_rows(rows)

    originals = [r for r in out if "~" not in r["id"]]
    copies = [r for r in out if "~" in r["id"]]
    assert originals == [r for r in rows if r["split"] == "train"]
    assert copies and all(r["split"] == "train" for r in copies)
    by_id = {r["id"]: r for r in originals}
    for copy in copies:
        source, name = copy["id"].rsplit("~", 1)
        assert name in TRAINED_VARIANTS
        assert copy["scores"] == by_id[source]["scores"] and copy["domain"] == by_id[source]["domain"]
        assert copy["query"] == variants(by_id[source])[name] != by_id[source]["query"]
    assert json.loads(json.dumps(out)) == out


def test_eval_sample_keeps_train_and_stratifies_the_rest(shared_data: Path) -> None:
    rows = read_rows(shared_data / "routing" / "routerdc_7model.jsonl")

    sample = eval_sample(rows, 1000)

    assert [r for r in sample if r["split"] == "train"] == [r for r in rows if r["split"] == "train"]
    test = [r for r in sample if r["split"] == "test"]
    assert abs(len(test) - 1000) <= 10
    assert {r["domain"] for r in test} == {r["domain"] for r in rows if r["split"] == "test"}
    assert sample == eval_sample(rows, 1000)
