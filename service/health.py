"""Is the service healthy? ``/healthz``'s verdict, and ``paperboy health`` asking for it.

Unhealthy, with a sentence per problem, when the last poll or the last
delivery failed (a ``cycle`` counts as both), or no poll has run for
:data:`STALE_POLLS` intervals of ``schedule.poll``; the web server adds "the
store is away" when it cannot read the runs at all. ``paperboy health``
asks the server where the configuration says it listens, so Docker's
HEALTHCHECK follows ``http.port``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any

from . import store
from .settings.schema import Http

POLL_JOBS = ("poll", "cycle")  # the jobs that poll the inbox
DELIVER_JOBS = ("deliver", "cycle")  # the jobs that deliver
STALE_POLLS = 3  # no poll for this many intervals: unhealthy


def verdict(
    latest: dict[str, store.JobRun], *, now: datetime, since: datetime, poll: float
) -> tuple[dict[str, Any], list[str]]:
    """/healthz's answer from the newest run of each job: unhealthy (the problems, each a
    sentence) when the last poll or the last delivery failed, or no poll has run for
    STALE_POLLS intervals."""

    def newest(jobs: tuple[str, ...]) -> store.JobRun | None:
        runs = [latest[j] for j in jobs if j in latest]
        return max(runs, key=lambda r: r.started_at, default=None)

    problems = []
    last_poll, last_delivery = newest(POLL_JOBS), newest(DELIVER_JOBS)
    for what, run in (("poll", last_poll), ("delivery", last_delivery)):
        if run is not None and not run.ok:
            problems.append(
                f"the last {what} ({run.job} at {run.started_at:%Y-%m-%d %H:%M:%S} UTC) failed: {run.error}"
            )
    quiet_since = last_poll.started_at if last_poll is not None else since
    if (now - quiet_since).total_seconds() > STALE_POLLS * poll:
        problems.append(
            f"no poll since {quiet_since:%Y-%m-%d %H:%M:%S} UTC ({STALE_POLLS} x schedule.poll = "
            f"{STALE_POLLS * poll:g}s); is paperboy run running?"
        )

    def described(run: store.JobRun | None) -> dict[str, Any] | None:
        if run is None:
            return None
        return {
            "job": run.job,
            "started_at": run.started_at.isoformat(),
            "seconds": round(run.seconds, 3),
            "ok": run.ok,
            "error": run.error,
        }

    newest_run = newest(tuple(latest))
    body = {
        "status": "failing" if problems else "ok",
        "store": "ok",
        "problems": problems,
        "last_run": described(newest_run),
        "last_poll": described(last_poll),
        "last_delivery": described(last_delivery),
    }
    return body, problems


def ask(http: Http) -> tuple[bool, str]:
    """GET /healthz where ``http`` says the server listens: (healthy, a line saying so)."""
    if not http.enabled:
        return False, "http.enabled is false: there is no server to ask"
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(http.host, http.host)
    url = f"http://{f'[{host}]' if ':' in host else host}:{http.port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            body, code = answer.read().decode(), answer.status
    except urllib.error.HTTPError as exc:
        body, code = exc.read().decode(), exc.code
    except OSError as exc:
        return False, f"{url}: no answer ({exc})"
    try:
        problems = json.loads(body).get("problems") or []
    except ValueError:
        problems = [body[:200]]
    return code == 200, f"{url}: {code} " + ("ok" if code == 200 else "; ".join(problems))
