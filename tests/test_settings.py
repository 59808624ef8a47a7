from pathlib import Path

import pytest

from service.settings import ConfigError, load_settings, parse_settings

MINIMAL = """\
database: sqlite:///var/p.db
inbox: inbox
email:
  from: "paperboy <papers@example.org>"
  transport: smtp
  smtp:
    host: 127.0.0.1
    port: 2525
  maildir: var/mail
feeds:
  dir: var/feeds
  base_url: https://papers.example.org/feeds
subscribers:
  - email: alice@example.org
    name: Alice
    keywords: [mamba, "state space model"]
    exclude: [medical]
"""


def test_minimal_config_gets_sensible_defaults(tmp_path: Path) -> None:
    s = parse_settings(MINIMAL, source="c.yaml", base=tmp_path)
    assert s.database == f"sqlite:///{tmp_path}/var/p.db"
    assert s.inbox == tmp_path / "inbox"
    assert s.feeds.dir == tmp_path / "var/feeds"
    assert s.feeds.base_url == "https://papers.example.org/feeds/"
    assert s.feeds.max_entries == 200
    assert s.email.smtp.starttls is None and s.email.smtp.username is None
    assert s.schedule.poll == 300 and s.schedule.deliver == "0 7 * * *"
    assert s.inbox_settle == 5
    assert s.subscribers[0].keywords == ["mamba", "state space model"]


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///var/p.db",
        "sqlite+pysqlite:///var/my%20papers.db?timeout=5",
        "sqlite:////srv/abs/p.db",
        "sqlite:///~/p.db",
        "sqlite://",
        "sqlite:///:memory:",
        "postgresql+psycopg://paper:s%40cret@db.example.org:5433/papers?sslmode=require",
        "postgresql://[::1]/papers",
    ],
)
def test_database_urls_are_read_as_sqlalchemy_reads_them(tmp_path: Path, url: str) -> None:
    """Loading reads the URL without SQLAlchemy; the engine then reads what loading wrote."""
    from sqlalchemy.engine import make_url

    s = parse_settings(f"database: '{url}'", source="c.yaml", base=tmp_path)
    given, stored = make_url(url), make_url(s.database)
    if given.get_backend_name() == "sqlite" and given.database not in (None, "", ":memory:"):
        where = Path(given.database).expanduser()
        assert stored.database == str(where if where.is_absolute() else tmp_path / where)
        assert stored.set(database=given.database) == given
    else:
        assert s.database == url


def test_empty_config_is_the_embedded_defaults(tmp_path: Path) -> None:
    s = parse_settings("", source="c.yaml", base=tmp_path)
    assert s.email.transport == "maildir"
    assert s.database.startswith("sqlite:///")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "subscribers:\n  - email: a@x.org\n    keywordz: [x]\n",
            "c.yaml:3: subscribers[0] (a@x.org).keywordz: unknown key; did you mean 'keywords'?",
        ),
        ("feeds:\n  max_entrie: 3\n", "c.yaml:2: feeds.max_entrie: unknown key; did you mean 'max_entries'?"),
        ("databse: x\n", "c.yaml:1: databse: unknown key; did you mean 'database'?"),
        (
            "database: var/p.db\n",
            "c.yaml:1: database: 'var/p.db' is not a database URL such as sqlite:///var/paperboy.db",
        ),
        ("email:\n  transport: smtpp\n", "c.yaml:2: email.transport: Input should be 'smtp' or 'maildir'"),
        ("schedule:\n  deliver: '99 * * *'\n", "c.yaml:2: schedule.deliver: '99 * * *' is not a cron line"),
        ("schedule:\n  poll: soon\n", "c.yaml:2: schedule.poll: 'soon' is not a duration"),
        (
            "subscribers:\n - {email: a@b.org}\n - {email: A@b.org}\n",
            "c.yaml:3: subscribers[1] (A@b.org): repeats subscribers[0] (A@b.org)",
        ),
        (
            "subscribers:\n - {email: not-an-address}\n",
            "c.yaml:2: subscribers[0].email: 'not-an-address' is not",
        ),
        (
            "subscribers:\n - email: a@b.org\n   keywords: ['--']\n",
            "c.yaml:3: subscribers[0] (a@b.org).keywords[0]: holds no word to match: '--'",
        ),
        (
            "subscribers:\n - email: a@b.org\n   query: '(a OR b'\n",
            "c.yaml:3: subscribers[0] (a@b.org).query: column 1: '(' is never closed\n    (a OR b\n    ^",
        ),
        (
            "subscribers:\n - email: a@b.org\n   query: 'mamba or ssm'\n",
            "c.yaml:3: subscribers[0] (a@b.org).query: column 7: operators are upper case: write OR",
        ),
        (
            "subscribers:\n - email: a@b.org\n   exclude: [ok, 'surv*ey']\n",
            "c.yaml:3: subscribers[0] (a@b.org).exclude[1]: '*' may only end a term",
        ),
        (
            "topics:\n  safety:\n    query: 'x AND /(/'\n",
            "c.yaml:3: topics.safety.query: column 7: bad regex",
        ),
        (
            "topics:\n  safety: {query: x}\nsubscribers:\n - email: a@b.org\n   topics: [safty]\n",
            "c.yaml:5: subscribers[0] (a@b.org).topics[0]: unknown topic 'safty'; did you mean 'safety'?",
        ),
        ("topics:\n  Bad Name: {query: x}\n", "c.yaml:2: topics.Bad Name: 'Bad Name' is not a topic name"),
        ("topics:\n  t: {title: T}\n", "c.yaml:2: topics.t: a topic needs keywords or a query"),
        ("subscribers:\n - name: Bob\n", "c.yaml:2: subscribers[0].email: required key is missing"),
        ("timezone: Mars/Olympus\n", "c.yaml:1: timezone: 'Mars/Olympus' is no IANA time zone"),
        (
            "email:\n  smtp: {password: '${PAPERBOY_TEST_UNSET}'}\n",
            "c.yaml:2: email.smtp.password: environment variable PAPERBOY_TEST_UNSET is not set",
        ),
        (
            "subscribers:\n - email: a@b.org\n   like: ['ok', '  ']\n",
            "c.yaml:3: subscribers[0] (a@b.org).like: entry 1 is empty",
        ),
        (
            "subscribers:\n - email: a@b.org\n   like: [" + ", ".join(["p"] * 201) + "]\n",
            "c.yaml:3: subscribers[0] (a@b.org).like: List should have at most 200 items",
        ),
        (
            "subscribers:\n - email: a@b.org\n   suggest: 51\n",
            "c.yaml:3: subscribers[0] (a@b.org).suggest: Input should be less than or equal to 50",
        ),
        ("feeds: [1,\n", "c.yaml:2: not valid YAML"),
        ("- just a list\n", "c.yaml:1: the configuration must be a mapping"),
    ],
)
def test_errors_name_file_line_and_key(body: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings(body, source="c.yaml", base=None)
    assert str(err.value).startswith(message)


def test_environment_variables_fill_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAPERBOY_TEST_PASSWORD", "s3cret")
    s = parse_settings(
        "email:\n  smtp: {username: u, password: '${PAPERBOY_TEST_PASSWORD}',"
        " host: '${PAPERBOY_TEST_HOST:-mx}'}\n",
        source="c.yaml",
        base=None,
    )
    assert s.email.smtp.password == "s3cret"
    assert s.email.smtp.host == "mx"
    assert "s3cret" not in repr(s)


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_settings(tmp_path / "nope.yaml")


def test_shipped_configs_are_valid() -> None:
    root = Path(__file__).parent.parent / "config"
    for path in sorted(root.glob("*.yaml")):
        load_settings(path)


# The fast path reads a plain file with yaml-rs; these must mean to it what they mean to ruamel.
PLAIN_YAML = [
    "",
    "# only a comment\n",
    "? a\n: b\n",
    "a: |\n  x\n  y\n\nb: >-\n  p\n  q\n",
    'a: "\\u00e9\\x41\\t"\n',
    "a: 'it''s'\n",
    "a: [1, 2.5, .5, -.inf, 0x1F, 0o17, 0b11, 010, 1_000, 12e3, 1e]\n",
    "a: [yes, no, on, off, true, False, null, ~, Null, '']\n",
    "a: 2024-01-01\nb: 2024-01-01 10:00:00\nc: 1:20\n",
    "a: {b: c, d}\ne: [f: g]\n",
    'a: b\n  c\nd: "multi\n  line"\n',
    'schedule: {deliver: "0 7 * * *"}\nsubscribers:\n  - {email: a@b.org, keywords: ["x*", "*y"]}\n',
]


@pytest.mark.parametrize("text", PLAIN_YAML + [p.read_text() for p in sorted(Path("config").rglob("*.yaml"))])
def test_the_fast_reader_reads_a_plain_file_as_ruamel_does(text: str) -> None:
    from ruamel.yaml import YAML

    from service.settings.loading import _load_fast

    assert _load_fast(text) == YAML(typ="safe", pure=False).load(text)


@pytest.mark.parametrize(
    "text",
    [
        "base: &b {keywords: [x]}\nother: {<<: *b, exclude: [y]}\n",  # a merge key
        "a: !!int '5'\nb: ! 5\n",  # tags
        "a: 1\n---\nb: 2\n",  # two documents: an error
        "%YAML 1.2\n---\na: 1\n",
    ],
)
def test_anchors_tags_and_documents_are_left_to_ruamel(text: str) -> None:
    from ruamel.yaml import YAML

    from service.settings.loading import _load_fast

    try:
        expected = YAML(typ="safe", pure=False).load(text)
    except Exception as exc:
        with pytest.raises(type(exc)):
            _load_fast(text)
    else:
        assert _load_fast(text) == expected
