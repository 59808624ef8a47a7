"""The rule language and the index: table-driven, pure."""

import pytest

from service.rules import Index, RuleError, RuleSet, Term, explain, highlight_spans, parse_query


def owners(index: Index, title: str, abstract: str = "") -> list[str]:
    return sorted(m.owner for m in index.match(title, abstract).subscribers)


def matches(
    keywords: list[str],
    text: str,
    exclude: list[str] = (),  # type: ignore[assignment]
    title: str = "",
    query: str | None = None,
) -> bool:
    return bool(owners(Index([RuleSet.build("x", keywords, exclude, query=query)]), title, text))


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
        ("jailbreak*", "Jailbreaking aligned LLMs", True),  # prefix
        ("jailbreak*", "a jailbreak", True),
        ("jailbreak*", "antijailbreak", False),  # a prefix still starts a word
        ("large language mod*", "large language modelling", True),
        ('"reward model"', "reward models", True),  # quotes are optional around a keyword
        ("/gpt-?4o?/", "we use GPT4o", True),  # regex, case-insensitive, on the original text
        ("/gpt-?4o?/", "GPT 4", False),
        ('/T\\\\"ULU/', 'T\\"ULU 3', True),  # unfolded: the LaTeX escape itself
    ],
)
def test_keyword_semantics(keyword: str, text: str, expected: bool) -> None:
    assert matches([keyword], text) is expected


def test_exclude_wins() -> None:
    assert matches(["reward model"], "reward models in medical imaging", exclude=["medical"]) is False
    assert matches(["reward model"], "reward models in imaging", exclude=["medical"]) is True


def test_overlapping_terms_are_all_found() -> None:
    index = Index([RuleSet.build("a", ["neural network"]), RuleSet.build("b", ["network"])])
    assert owners(index, "", "a neural network") == ["a", "b"]


def test_score_counts_distinct_terms_and_weighs_title_hits() -> None:
    index = Index([RuleSet.build("a", ["mamba", "vision", "absent"])])
    [m] = index.match("Mamba for segmentation", "mamba mamba vision").subscribers
    assert m.terms == ("mamba", "vision")
    assert m.score == 2 + 1


def test_only_subscribers_whose_terms_occur_are_returned() -> None:
    index = Index([RuleSet.build(f"s{i}", [f"word{i}"]) for i in range(100)])
    assert owners(index, "word7 and word42") == ["s42", "s7"]


def test_term_needles() -> None:
    assert Term.parse("Reward-Model").needles() == [" reward model ", " reward models "]


def test_highlight_spans_point_into_the_original_text() -> None:
    text = 'T\\"ULU 3 uses State-Space Models; LLMs and reward models.'
    spans = highlight_spans(text, ["tulu", "state space model", "LLM", "reward model", "model"])
    assert [text[s:e] for s, e in spans] == ['T\\"ULU', "State-Space Models", "LLMs", "reward models"]


TITLE = "Jailbreaking LLMs with State-Space Models"
ABSTRACT = 'We study refusal in T\\"ULU 3 and reward models; a survey of alignment follows.'


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("jailbreak*", True),
        ("jailbreak", False),  # whole words: the title says Jailbreaking
        ("refusal AND tulu", True),
        ("refusal tulu", True),  # adjacent terms mean AND
        ("refusal AND medical", False),
        ("medical OR refusal", True),
        ("NOT medical", True),
        ("-medical", True),
        ("-refusal", False),
        ("refusal -survey", False),
        ("refusal AND NOT survey", False),
        ("medical OR refusal AND NOT survey", False),  # NOT > AND > OR: medical OR (refusal AND NOT survey)
        ("(medical OR refusal) AND NOT vision", True),
        ("NOT medical AND NOT vision", True),
        ("NOT (medical OR refusal)", False),
        ("NOT NOT refusal", True),
        ('"state space model"', True),  # plural last word, '-' between words
        ('"space state"', False),
        ('"reward models"', True),
        ('"large language mod*"', False),
        ('"reward mod*"', True),
        ("title:jailbreak*", True),
        ("abstract:jailbreak*", False),
        ("title:refusal", False),
        ("abstract:(refusal AND tulu)", True),
        ("title:(refusal OR llm)", True),
        ('title:"state space model" abstract:alignment', True),
        ("title:/llms\\b/", True),
        ("abstract:/llms/", False),
        ('/t\\\\"ulu/', True),  # a regex sees the LaTeX escape, case-insensitively
        ("/tülu/", False),  # ...and not the folded form
        ("tülu", True),
        ("a AND b OR refusal", True),
        ('"and" refusal', True),
    ],
)
def test_query_semantics(query: str, expected: bool) -> None:
    assert matches([], ABSTRACT, title=TITLE, query=query) is expected


@pytest.mark.parametrize(
    ("query", "column", "message"),
    [
        ("(alignment OR refusal", 1, "'(' is never closed"),
        ("alignment OR refusal)", 21, "')' has no '(' to close"),
        ("a AND (b OR (c)", 7, "'(' is never closed"),
        ("()", 1, "( needs a term after it"),
        ("mamba AND", 7, "AND needs a term after it"),
        ("OR mamba", 1, "OR needs a term before it"),
        ("mamba OR OR ssm", 7, "OR needs a term after it"),
        ("NOT", 1, "NOT needs a term after it"),
        ('"state space', 1, "this quote is never closed"),
        ('""', 1, "holds no word to match"),
        ("/gpt(/", 1, "bad regex: missing ): gpt("),  # RE2 says no column: the regex is named
        ("//", 1, "empty regex"),
        ("/unclosed", 1, "this regex is never closed"),
        ("jail*break", 1, "'*' may only end a term"),
        ("author:smith", 1, "unknown field 'author:'"),
        ("title: mamba", 1, "title: needs a term right after it"),
        ("title:(abstract:mamba)", 1, "can never match"),
        ("mamba or ssm", 7, "operators are upper case: write OR"),
        ("mamba & ssm", 7, "holds no word to match"),
        ("", None, "the query is empty"),
    ],
)
def test_query_errors_name_the_column(query: str, column: int | None, message: str) -> None:
    with pytest.raises(RuleError) as err:
        parse_query(query)
    assert err.value.column == column
    assert message in err.value.message
    if column is not None:
        assert str(err.value).endswith("\n    " + query + "\n    " + " " * (column - 1) + "^")


def test_precedence_shows_in_the_parsed_tree() -> None:
    assert str(parse_query("a OR b c -d")) == "a OR (b AND c AND NOT d)"
    assert str(parse_query("title:(a OR b) x")) == "(title:a OR title:b) AND x"


def test_rule_set_errors_name_the_owner_and_the_rule() -> None:
    with pytest.raises(RuleError, match=r"bob@x.org: query: column 3: \( needs a term after it"):
        RuleSet.build("bob@x.org", query="a (")
    with pytest.raises(RuleError, match=r"bob@x.org: exclude\[1\]: holds no word"):
        RuleSet.build("bob@x.org", ["ok"], ["fine", "--"])
    with pytest.raises(RuleError, match="unknown topic 'nope'"):
        Index([RuleSet.build("bob@x.org", ["ok"], topics=["nope"])])


def test_topics_bring_papers_and_say_so() -> None:
    safety = RuleSet.build("safety", query="(alignment OR refusal OR jailbreak*) AND NOT survey")
    vision = RuleSet.build("vision", ["segmentation"])
    index = Index(
        [
            RuleSet.build("ann", ["mamba"], topics=["vision"]),
            RuleSet.build("bob", ["state space model"], topics=["safety"]),
            RuleSet.build("cat", [], ["medical"], topics=["safety"]),
        ],
        [safety, vision],
    )
    result = index.match("Jailbreaking LLMs", "refusal in state space models")
    assert [(m.owner, m.via, m.terms) for m in result.topics] == [
        ("safety", ("query",), ("refusal", "jailbreak*"))
    ]
    by_owner = {m.owner: m for m in result.subscribers}
    assert sorted(by_owner) == ["bob", "cat"]
    assert by_owner["bob"].via == ("keywords", "topic:safety")
    assert by_owner["bob"].terms == ("state space model", "refusal", "jailbreak*")
    assert by_owner["bob"].score == 1 + 1 + 2  # jailbreak* is in the title
    assert owners(index, "Jailbreaking LLMs in medical imaging", "refusal") == ["bob"]  # cat's exclude wins
    assert owners(index, "A survey of jailbreak attacks", "refusal") == []  # the topic's own NOT
    assert owners(index, "Mamba segmentation", "") == ["ann"]


def test_terms_under_not_or_in_a_false_branch_do_not_count() -> None:
    index = Index([RuleSet.build("x", query="(alpha AND beta) OR gamma OR NOT delta")])
    [m] = index.match("alpha gamma", "").subscribers
    assert m.terms == ("gamma",)  # alpha's AND was false; NOT delta holds but names no term
    assert m.score == 2


def test_a_rule_true_on_an_empty_paper_is_still_evaluated() -> None:
    index = Index([RuleSet.build("x", query="NOT survey"), RuleSet.build("y", query="/diffusion/")])
    assert owners(index, "Anything at all", "") == ["x"]
    assert owners(index, "A survey", "of Diffusion models") == ["y"]


def test_explain_lists_every_rule_and_the_verdict() -> None:
    bob = RuleSet.build(
        "bob@x.org",
        ["mamba", "vision"],
        ["medical"],
        query="title:jailbreak* AND NOT survey",
        topics=["safety"],
    )
    topics = {"safety": RuleSet.build("safety", query="alignment OR refusal")}

    yes = explain(bob, topics, "Jailbreaking LLMs", "We study refusal and mamba.")
    assert yes.match is not None and yes.match.via == ("keywords", "query", "topic:safety")
    assert yes.lines == [
        "keywords (any of): match",
        "  mamba: hit in abstract",
        "  vision: missed",
        "query title:jailbreak* AND NOT survey: match",
        "  AND: true",
        "    title:jailbreak*: hit in title",
        "    NOT: true",
        "      survey: missed",
        "exclude (none of): nothing excluded",
        "  medical: missed",
        "topic safety: match",
        "  query alignment OR refusal: match",
        "    OR: true",
        "      alignment: missed",
        "      refusal: hit in abstract",
        "verdict: gets this paper, via keywords, query, topic:safety;"
        " terms mamba, jailbreak*, refusal; score 4",
    ]

    no = explain(bob, topics, "Medical jailbreaks", "A survey; jailbreaking.")
    assert no.match is None
    assert "    title:jailbreak*: hit in title and abstract" in no.lines
    assert "exclude (none of): excluded by medical" in no.lines
    assert no.lines[-1] == "verdict: does not get this paper: an exclude term hit"

    scoped = explain(RuleSet.build("c", query="title:refusal"), {}, "Other", "refusal")
    assert scoped.lines[1] == "  title:refusal: missed: only in the abstract, and the rule looks in the title"
    assert scoped.lines[-1] == "verdict: does not get this paper: no rule matched"


def test_prefix_and_regex_terms_highlight() -> None:
    text = "Jailbreaking GPT-4o: jailbreaks everywhere"
    spans = highlight_spans(text, ["jailbreak*", "/gpt-4o/"])
    assert [text[s:e] for s, e in spans] == ["Jailbreaking", "GPT-4o", "jailbreaks"]
    one = "a b c"
    assert [one[s:e] for s, e in highlight_spans(one, ["b*"])] == ["b"]


def test_prefix_needles_have_no_closing_space() -> None:
    assert Term.parse("Jail-Break*").needles() == [" jail break"]
