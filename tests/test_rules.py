import pytest

from service.rules import Index, RuleSet, Term, highlight_spans


def matches(keywords: list[str], text: str, exclude: list[str] = (), title: str = "") -> bool:  # type: ignore[assignment]
    return bool(Index([RuleSet.build("x", keywords, exclude)]).match(title, text))


@pytest.mark.parametrize(
    ("keyword", "text", "expected"),
    [
        ("mamba", "We extend Mamba to vision.", True),
        ("mamba", "MambaFormer is a model.", False),  # whole words only
        ("mamba", "mambas everywhere", True),  # plural
        ("LLM", "Large LLMs are large.", True),
        ("LLMs", "one LLM", False),  # a plural keyword does not match the singular
        ("llm", "LLM-based agents", True),
        ("state space model", "a State-Space Model for text", True),
        ("state space model", "state space models scale", True),  # phrase: last word plural
        ("state space model", "states space model", False),  # only the last word may be plural
        ("state space model", "state model space", False),  # words in sequence
        ("instruction-following", "instruction following benchmarks", True),
        ("instruction following", "Instruction-Following models", True),
        ("instruction following", "instruction_following", True),
        ("TÜLU", 'we introduce T\\"ULU 3', True),
        ('T\\"ULU', "Tulu is here", True),
        ("tulu", "TÜLU 3", True),
        ("reward model", "reward models and value models", True),
        ("query", "many queries", True),
        ("bias", "social biases", True),
        ("network", "a neural network", True),
        ("neural network", "neural networks", True),
        ("gpt-4", "GPT 4 and GPT-4o", True),
        ("gpt-4", "GPT-40", False),
        ("c", "the C language", True),
    ],
)
def test_keyword_semantics(keyword: str, text: str, expected: bool) -> None:
    assert matches([keyword], text) is expected


def test_exclude_wins() -> None:
    assert matches(["reward model"], "reward models in medical imaging", exclude=["medical"]) is False
    assert matches(["reward model"], "reward models in imaging", exclude=["medical"]) is True


def test_overlapping_terms_are_all_found() -> None:
    index = Index([RuleSet.build("a", ["neural network"]), RuleSet.build("b", ["network"])])
    assert [m.owner for m in index.match("", "a neural network")] == ["a", "b"]


def test_score_counts_distinct_terms_and_weighs_title_hits() -> None:
    index = Index([RuleSet.build("a", ["mamba", "vision", "absent"])])
    [m] = index.match("Mamba for segmentation", "mamba mamba vision")
    assert m.terms == ("mamba", "vision")
    assert m.score == 2 + 1


def test_only_subscribers_whose_terms_occur_are_returned() -> None:
    index = Index([RuleSet.build(f"s{i}", [f"word{i}"]) for i in range(100)])
    assert [m.owner for m in index.match("word7 and word42", "")] == ["s42", "s7"]


def test_term_needles() -> None:
    assert Term.parse("Reward-Model").needles() == [" reward model ", " reward models "]


def test_highlight_spans_point_into_the_original_text() -> None:
    text = 'T\\"ULU 3 uses State-Space Models; LLMs and reward models.'
    spans = highlight_spans(text, ["tulu", "state space model", "LLM", "reward model", "model"])
    assert [text[s:e] for s, e in spans] == ['T\\"ULU', "State-Space Models", "LLMs", "reward models"]
