"""Hostile requests against the real server on a free port (uvicorn, a real HTTP client; the
``served`` fixture of conftest): request bodies are capped, and the server keeps answering
others meanwhile."""

from __future__ import annotations

import contextlib
import socket

import httpx

from service import store
from service.cycle import App


def token(app: App) -> str:
    with store.reading(app.engine) as session:
        sub = store.subscriber_by_email(session=session, email="alice@example.org")
    assert sub is not None
    return sub.token


def test_a_form_of_100000_fields_is_refused_at_once(served: tuple[App, str]) -> None:
    app, base = served
    body = "&".join(f"f{i}=x" for i in range(100_000)).encode()  # 0.9 MB
    with httpx.Client(base_url=base, timeout=30) as http:
        answer = http.post(
            f"/unsubscribe/{token(app)}",
            content=body,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert answer.status_code == 413 and "over 4096 bytes" in answer.text
        assert http.get("/healthz").status_code == 200
    with store.reading(app.engine) as session:  # and nothing was recorded
        sub = store.subscriber_by_email(session=session, email="alice@example.org")
    assert sub is not None and sub.unsubscribed_at is None


def test_a_chunked_body_without_a_length_is_cut_off(served: tuple[App, str]) -> None:
    """100 MB offered in chunks, no Content-Length: the server answers 413 once it has read
    past the limit, and meanwhile answers everyone else."""
    app, base = served
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as raw:
        raw.sendall(
            f"POST /unsubscribe/{token(app)} HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        chunk = b"a" * 65536
        answer = b""
        for _ in range(100 * 16):  # up to 100 MB; the answer comes long before
            try:
                raw.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                break
            raw.setblocking(False)
            with contextlib.suppress(BlockingIOError):  # no answer yet: go on sending
                answer += raw.recv(4096)
            raw.setblocking(True)
            if answer:
                break
        if not answer:
            answer = raw.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200


def test_the_one_click_form_still_works(served: tuple[App, str]) -> None:
    app, base = served
    answer = httpx.post(
        f"{base}/unsubscribe/{token(app)}", data={"List-Unsubscribe": "One-Click"}, timeout=10
    )
    assert answer.status_code == 200
    with store.reading(app.engine) as session:
        sub = store.subscriber_by_email(session=session, email="alice@example.org")
    assert sub is not None and sub.unsubscribed_at is not None
