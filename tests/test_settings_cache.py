"""A big configuration is kept validated between processes (service.settings.cache): loaded
again from the cache while the file, the environment variables it names and paperboy are
the same, read and validated anew when any of them changes; never from a folder another
user could write to; never a small file or one that reads a DKIM key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.settings import ConfigError, load_settings
from service.settings import loading as settings_loading


def big_config(folder: Path, *, extra: str = "", people: int = 2_000) -> Path:
    lines = [
        f"database: sqlite:///{folder}/paperboy.db",
        f"feeds: {{dir: {folder}/feeds}}",
        extra,
        "subscribers:",
    ]
    for i in range(people):
        lines += [f"  - email: reader{i}@example.org", f'    keywords: [model{i}, "language model"]']
    path = folder / "paperboy.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert path.stat().st_size > 64 * 1024  # big enough to be kept
    return path


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("PAPERBOY_CACHE", str(folder))
    return folder


def no_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the configuration was parsed again")

    monkeypatch.setattr(settings_loading, "parse_settings", refuse)


def test_a_big_configuration_is_read_once_then_kept(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = big_config(tmp_path)
    first = load_settings(config)
    [entry] = cache.glob("settings-*.pickle")
    assert oct(cache.stat().st_mode & 0o777) == "0o700" and oct(entry.stat().st_mode & 0o777) == "0o600"
    with monkeypatch.context() as m:
        no_parsing(m)
        again = load_settings(config)
    assert again == first and again.subscribers[1999].keywords == ["model1999", "language model"]
    assert again.rules_digest == first.rules_digest and again.feed_digests == first.feed_digests


def test_a_changed_file_or_variable_is_read_again(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PAPERBOY_TEST_PORT", raising=False)
    config = big_config(tmp_path, extra="http:\n  port: ${PAPERBOY_TEST_PORT:-8080}")
    assert load_settings(config).http.port == 8080
    monkeypatch.setenv("PAPERBOY_TEST_PORT", "9090")  # the same file, another value
    assert load_settings(config).http.port == 9090
    config.write_text(config.read_text().replace("reader7@", "reader7 @"))  # now invalid
    with pytest.raises(ConfigError, match="subscribers"):
        load_settings(config)
    assert len(list(cache.glob("settings-*.pickle"))) == 2


def test_an_unsafe_folder_a_small_file_and_a_dkim_key_are_not_kept(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache.mkdir()
    os.chmod(cache, 0o777)  # another user could put a pickle here
    load_settings(big_config(tmp_path))
    assert list(cache.iterdir()) == []

    os.chmod(cache, 0o700)
    small = tmp_path / "small.yaml"
    small.write_text("subscribers: [{email: a@example.org, keywords: [x]}]\n")
    load_settings(small)
    assert list(cache.iterdir()) == []

    key = Path(__file__).parent / "fixtures" / "dkim" / "test-only.pem"  # read at validation, and secret
    dkim = f"email:\n  from: p@example.org\n  dkim: {{domain: example.org, selector: s1, private_key: {key}}}"
    load_settings(big_config(tmp_path, extra=dkim))
    assert list(cache.iterdir()) == []
