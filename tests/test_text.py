import pytest

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
