"""The web server on a free 127.0.0.1 port, driven by a real HTTP client (httpx), feedparser
and headless Chromium: feeds with conditional GET, one-click unsubscribe, the page,
/healthz and /metrics. SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service import store
from service.cycle import App
from service.server import Server
from service.settings import parse_settings
from tests.helpers import ROOT, Sink, copy_digest, fetch, free_port, run_cli, settings_for, write_config

TOKEN_OF_NO_ONE = "Zm9vYmFyYmF6cXV4cXV1eDEyMzQ1Njc4"


def token_of(app: App, email: str) -> str:
    with store.reading(app.engine) as session:
        sub = store.subscriber_by_email(session=session, email=email)
        assert sub is not None
        return sub.token


def test_feeds_answer_with_validators_304_gzip_and_their_content_types(served: tuple[App, str]) -> None:
    app, base = served
    with httpx.Client(base_url=base, timeout=10) as http:
        atom = http.get("/feeds/all.atom")
        assert atom.status_code == 200
        assert atom.headers["content-type"] == "application/atom+xml; charset=utf-8"
        assert atom.headers["etag"] and atom.headers["last-modified"]
        assert atom.headers["content-encoding"] == "gzip"  # httpx asks for gzip and decodes it
        assert atom.num_bytes_downloaded < len(atom.content) / 2  # compressed on the wire
        assert b"Pushing Frontiers" in atom.content

        again = http.get("/feeds/all.atom", headers={"If-None-Match": atom.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        since = http.get("/feeds/all.atom", headers={"If-Modified-Since": atom.headers["last-modified"]})
        assert since.status_code == 304
        stale = http.get("/feeds/all.atom", headers={"If-None-Match": '"something-else"'})
        assert stale.status_code == 200

        rss = http.get("/feeds/topics/3d-vision.rss")
        assert rss.status_code == 200 and rss.headers["content-type"] == "application/rss+xml; charset=utf-8"
        mine = http.get(f"/feeds/u/{token_of(app, 'alice@example.org')}.atom")
        assert mine.status_code == 200 and b"Pushing Frontiers" in mine.content

        # Unknown tokens, made-up names, temporary files and escapes: one and the same 404.
        missing = [
            f"/feeds/u/{TOKEN_OF_NO_ONE}.atom",
            "/feeds/u/alice@example.org.atom",
            "/feeds/topics/no-such-topic.atom",
            "/feeds/all.xml",
            "/feeds/",
            "/feeds/..%2f..%2fetc%2fpasswd",
        ]
        answers = {(r.status_code, r.content) for r in (http.get(path) for path in missing)}
        assert answers == {(404, b"not found")}


def test_feedparser_reads_a_feed_through_the_server_and_revalidates(served: tuple[App, str]) -> None:
    _, base = served
    first = feedparser.parse(f"{base}/feeds/topics/3d-vision.atom")
    assert first.status == 200 and not first.bozo
    assert first.feed.title == "3D vision" and len(first.entries) > 0
    second = feedparser.parse(f"{base}/feeds/topics/3d-vision.atom", etag=first.etag, modified=first.modified)
    assert second.status == 304 and second.entries == []


def test_one_click_unsubscribe_records_the_opt_out(served: tuple[App, str]) -> None:
    app, base = served
    token = token_of(app, "alice@example.org")
    with store.reading(app.engine) as session:
        before = store.counts(session=session)["deliveries"]
    assert before["pending"] > 0
    with httpx.Client(base_url=base, timeout=10) as http:
        page = http.get(f"/unsubscribe/{token}")
        assert page.status_code == 200
        assert 'name="List-Unsubscribe" value="One-Click"' in page.text and "<button" in page.text
        # who they are, and whom to write to (email.contact; by default the sender)
        assert "<strong>alice@example.org</strong>" in page.text
        assert '<a href="mailto:papers@example.org">paperboy</a>' in page.text
        assert http.post(f"/unsubscribe/{token}", data={"other": "x"}).status_code == 400
        # RFC 8058: mail providers POST multipart/form-data with List-Unsubscribe=One-Click.
        done = http.post(f"/unsubscribe/{token}", files={"List-Unsubscribe": (None, "One-Click")})
        assert done.status_code == 200 and "You are unsubscribed" in done.text
        assert "You are unsubscribed" in http.get(f"/unsubscribe/{token}").text
        # the same click again changes nothing and still says so
        assert http.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
        unknown = http.post(f"/unsubscribe/{TOKEN_OF_NO_ONE}", data={"List-Unsubscribe": "One-Click"})
        assert unknown.status_code == 404 and http.get(f"/unsubscribe/{TOKEN_OF_NO_ONE}").status_code == 404
    with store.reading(app.engine) as session:
        [out] = store.opted_out(session=session)
        after = store.counts(session=session)
    assert out.email == "alice@example.org" and out.unsubscribed_at is not None
    assert after["unsubscribed"] == 1
    assert after["deliveries"]["cancelled"] > 0  # Alice's pending papers will not go out
    assert after["deliveries"]["pending"] == before["pending"] - after["deliveries"]["cancelled"]


def test_the_page_lists_topic_feeds_opml_latest_papers_and_a_chart(served: tuple[App, str]) -> None:
    _, base = served
    with httpx.Client(base_url=base, timeout=10) as http:
        page = http.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        html = page.text
        for name in ("3d-vision", "llm-safety"):
            assert f'href="{base}/feeds/topics/{name}.atom"' in html
            assert f'href="{base}/feeds/topics/{name}.rss"' in html
        assert "Gaussians, NeRFs and friends" in html and "Paper Desk" in html
        assert "SemiCD-VL: Visual-Language Model Guidance" in html  # the first of the latest papers
        assert html.count('class="papers-bar"') == 30 and "<svg" in html and "<script" not in html
        assert "39 papers seen" in html and "poll at" in html  # the run recorded by the fixture

        opml = http.get("/feeds.opml")
        assert opml.headers["content-type"].startswith("text/x-opml")
        outlines = ET.fromstring(opml.content).findall("./body/outline")
        assert [o.get("xmlUrl") for o in outlines] == [
            f"{base}/feeds/all.atom",
            f"{base}/feeds/topics/3d-vision.atom",
            f"{base}/feeds/topics/llm-safety.atom",
        ]
        # every feed the page offers answers
        for outline in outlines:
            assert http.get(outline.get("xmlUrl", "")).status_code == 200


def test_healthz_and_metrics(served: tuple[App, str]) -> None:
    app, base = served
    with httpx.Client(base_url=base, timeout=10) as http:
        health = http.get("/healthz").json()
        assert health["status"] == "ok" and health["store"] == "ok"
        assert health["last_run"]["job"] == "poll" and health["last_run"]["ok"] is True
        metrics = http.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.text)
        for s in family.samples
    }
    with store.reading(app.engine) as session:
        counts = store.counts(session=session)
    assert samples[("paperboy_papers", ())] == counts["papers"] == 39
    for state, n in counts["deliveries"].items():
        assert samples[("paperboy_deliveries", (("state", state),))] == n
    assert samples[("paperboy_job_runs_total", (("job", "poll"),))] == 1
    assert samples[("paperboy_job_seconds_total", (("job", "poll"),))] > 0
    assert samples[("paperboy_subscribers", (("state", "receiving"),))] == 2


def test_healthz_says_503_when_the_store_is_away(tmp_path: Path) -> None:
    port = free_port()
    away = "postgresql+psycopg://postgres@127.0.0.1:1/nothing?connect_timeout=2"
    settings = parse_settings(settings_for(tmp_path, away, port), source="t.yaml", base=tmp_path)
    health = fetch(App(settings, progress=False), "/healthz")
    assert health.status_code == 503 and health.json()["status"] == "failing"


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def test_the_page_in_headless_chromium(served: tuple[App, str], tmp_path: Path) -> None:
    """A real browser renders the page: a screenshot is taken and the topic links are in its DOM."""
    _, base = served
    browser = chromium()
    flags = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    shot = tmp_path / "page.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1200,1600", f"{base}/"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    dom = subprocess.run(
        [*flags, "--dump-dom", f"{base}/"], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    assert f'href="{base}/feeds/topics/3d-vision.atom"' in dom
    assert f'href="{base}/feeds/topics/llm-safety.atom"' in dom
    assert 'id="activity"' in dom and "SemiCD-VL" in dom


def test_unsubscribe_from_an_email_end_to_end(
    tmp_path: Path, database_url: str, smtp_server: tuple[Sink, int]
) -> None:
    """An email arrives over SMTP; its List-Unsubscribe URL is POSTed to `paperboy serve`
    as a mail provider does; the next run sends that reader nothing, `status` and `check`
    show the opt-out, and `paperboy resubscribe` undoes it."""
    sink, smtp_port = smtp_server
    port = free_port()
    config = write_config(
        tmp_path / "paperboy.yaml",
        settings_for(tmp_path, database_url, port)
        .replace(
            "  maildir: ", f"  transport: smtp\n  smtp: {{host: 127.0.0.1, port: {smtp_port}}}\n  maildir: "
        )
        # so that Alice would get mail from each of the three digests
        .replace("keywords: [TÜLU, gaussian]", "keywords: [TÜLU, gaussian, diffusion, TaskBench]"),
    )
    copy_digest("digest-a.txt", tmp_path / "inbox")
    assert run_cli("--config", config, "run", "--once").returncode == 0
    [email] = sink.to("alice@example.org")
    urls = [u.strip().strip("<>") for u in str(email["List-Unsubscribe"]).split(",")]
    assert urls[0] == f"http://127.0.0.1:{port}/unsubscribe/{urls[0].rsplit('/', 1)[1]}"
    assert urls[1].startswith("mailto:papers@example.org?subject=unsubscribe%20")

    server = subprocess.Popen(
        [sys.executable, "-m", "service", "--config", str(config), "serve"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "paperboy serve did not come up"
            time.sleep(0.2)
        done = httpx.post(urls[0], files={"List-Unsubscribe": (None, "One-Click")}, timeout=10)
        assert done.status_code == 200 and "You are unsubscribed" in done.text
        assert "<strong>alice@example.org</strong>" in done.text
    finally:
        server.send_signal(signal.SIGTERM)
        _, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    logged = r"INFO subscriber\.unsubscribed subscriber=\d+ email=alice@example\.org via=one-click"
    assert re.search(logged, err), err

    before = len(sink.messages)
    copy_digest("digest-b.txt", tmp_path / "inbox")
    assert run_cli("--config", config, "run", "--once").returncode == 0
    later = sink.messages[before:]
    assert [m["To"].addresses[0].addr_spec for m in later] == ["bob@example.org"]  # not Alice any more
    status = json.loads(run_cli("--config", config, "status", "--json").stdout)
    assert status["unsubscribed"] == 1
    assert [u["email"] for u in status["unsubscribed_emails"]] == ["alice@example.org"]
    check = run_cli("--config", config, "check")
    assert check.returncode == 0 and "unsubscribed: alice@example.org since" in check.stdout

    assert run_cli("--config", config, "resubscribe", "alice@example.org").returncode == 0
    assert json.loads(run_cli("--config", config, "status", "--json").stdout)["unsubscribed"] == 0
    before = len(sink.messages)
    copy_digest("digest-c.txt", tmp_path / "inbox")
    assert run_cli("--config", config, "run", "--once").returncode == 0
    assert any("alice@example.org" in str(m["To"]) for m in sink.messages[before:])


def test_healthz_is_503_with_the_reason_when_a_run_failed_or_polls_stopped(
    tmp_path: Path, database_url: str
) -> None:
    """What Docker's HEALTHCHECK and an orchestrator read: the last poll or delivery failed,
    or no poll for three intervals (the App's clock is moved on, not waited for)."""
    port = free_port()
    text = settings_for(tmp_path, database_url, port) + "schedule: {poll: 60s}\n"
    settings = parse_settings(text, source=str(tmp_path / "paperboy.yaml"), base=tmp_path)
    (tmp_path / "inbox").mkdir()
    now = [datetime(2026, 11, 29, 12, 0, tzinfo=UTC)]
    app = App(settings, progress=False, clock=lambda: now[0])
    app.run_job("poll", send=False)
    server = Server(lambda: app, host="127.0.0.1", port=port)
    assert server.start()

    def health() -> tuple[int, dict]:
        answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
        return answer.status_code, answer.json()

    try:
        assert health()[0] == 200
        failed = store.JobRun(
            job="deliver",
            started_at=now[0] + timedelta(seconds=1),
            seconds=0.5,
            ok=False,
            error="delivery stopped: 127.0.0.1:25 refused the session (535 bad credentials)",
        )
        with store.transaction(app.engine) as session:
            store.record_run(session=session, run=failed)
        code, body = health()
        assert code == 503 and body["status"] == "failing"
        assert "the last delivery (deliver at" in body["problems"][0] and "535" in body["problems"][0]
        config = write_config(tmp_path / "paperboy.yaml", text)
        asked = run_cli("--config", config, "health")  # what the Docker HEALTHCHECK runs
        assert asked.returncode == 1 and f":{port}/healthz: 503 the last delivery" in asked.stdout
        now[0] += timedelta(seconds=30)
        app.run_job("poll", send=False)  # a good poll does not hide the failed delivery
        assert health()[0] == 503
        app.run_job("cycle", send=True)  # a whole good run does
        code, body = health()
        assert code == 200 and body["problems"] == []
        assert run_cli("--config", config, "health").returncode == 0
        now[0] += timedelta(seconds=181)  # three intervals and a second without a poll
        code, body = health()
        assert code == 503 and body["problems"][0].startswith("no poll since")
    finally:
        server.stop()
        app.engine.dispose()


def test_a_taken_port_is_one_clear_line_and_exit_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(
            tmp_path / "paperboy.yaml", settings_for(tmp_path, f"sqlite:///{tmp_path}/p.db", port)
        )
        for command in (["serve"], ["run"]):
            done = run_cli("--config", config, *command)
            assert done.returncode == 1, done.stderr
            errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
            assert len(errors) == 1 and f"cannot listen on 127.0.0.1:{port}" in errors[0], done.stderr
            assert (
                "http.port" in errors[0] and "listening" not in done.stderr and "Traceback" not in done.stderr
            )
