import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from service import text as text_module
from service.text import folded_words, paper_key, plurals, tokens


@pytest.mark.parametrize(
    ("title", "key"),
    [
        ("TÜLU 3: Pushing Frontiers", "tulu 3 pushing frontiers"),
        ('T\\"ULU 3: Pushing Frontiers', "tulu 3 pushing frontiers"),
        ("Tulu 3 -- pushing   frontiers!", "tulu 3 pushing frontiers"),
        ("Instruction-Following Models", "instruction following models"),
        ("instruction_following models", "instruction following models"),
        ("Ｆｕｌｌｗｉｄｔｈ LLM", "fullwidth llm"),  # NFKC
        ("Straße", "strasse"),  # casefold
        ("Caf\\'e and na\\\"ive", "cafe and naive"),
        ("\\c{c}a va", "ca va"),
        ("  ", ""),
    ],
)
def test_paper_key_folds_spellings(title: str, key: str) -> None:
    assert paper_key(title) == key


def test_tokens_keep_their_place_in_the_original() -> None:
    text = 'Say T\\"ULU-3, please'
    assert [text[t.start : t.end] for t in tokens(text)] == ["Say", 'T\\"ULU', "3", "please"]
    assert folded_words(text) == ["say", "tulu", "3", "please"]


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=80))
@example("Tulu 3 -- pushing_frontiers!\t\x1f\\'e x")
@example("ÀB")  # not ASCII: the general path
def test_the_ascii_fast_path_folds_as_the_general_path(text: str) -> None:
    assert folded_words(text) == text_module._any_folded_words(text)


@pytest.mark.parametrize(
    ("word", "forms"),
    [
        ("model", ("models",)),
        ("llm", ("llms",)),
        ("bias", ("biass", "biases")),
        ("query", ("querys", "queries")),
        ("day", ("days",)),
    ],
)
def test_plurals(word: str, forms: tuple[str, ...]) -> None:
    assert plurals(word) == forms
