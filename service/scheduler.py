"""``paperboy run``: the pipeline on an APScheduler schedule.

Two jobs: ``poll`` (every ``schedule.poll``: ingest, match, feeds) and
``deliver`` (on the ``schedule.deliver`` cron line, in ``timezone``, and on
each subscriber's own ``schedule`` in their zone: send the digests that are due,
then feeds). Both run on a single worker thread, each with
``max_instances=1`` and ``coalesce=True``, so they never overlap and a run
missed while the machine slept happens once when it wakes (within
``MISFIRE_GRACE`` seconds).

Every two seconds the configuration file is looked at; when it changed it is
loaded again on a thread of its own (jobs go on meanwhile) and takes over
from the next job. An invalid edit is logged with its reasons and the last good
configuration keeps running. SIGTERM and SIGINT let the current step finish
(ingestion stops between files), then the process exits with 0.

Only one process schedules per database (:mod:`service.leader`); another
``paperboy run`` on the same database waits in standby and takes over when
the leader stops. Delivery workers (``paperboy worker``, ``role="worker"``)
take no lock: any number, on any host sharing the store, run only the
``deliver`` job on the same cron line and share the due digests with the
leader (claims skip what another process holds: ``FOR UPDATE SKIP LOCKED``).

The leader also serves HTTP (:mod:`service.web`) on a thread of its own
unless ``http.enabled`` is false; a port that cannot be opened stops the
process with exit code 1. ``http.*`` changes take effect at the next start.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from tzlocal import get_localzone_name

from .cycle import App, cadences
from .leader import Leader, leader_for
from .log import event
from .server import PortTaken, Server
from .settings import Settings, load_settings

log = logging.getLogger("paperboy.scheduler")

MISFIRE_GRACE = 6 * 3600
LEADER_RETRY = 5.0  # seconds between two tries of a process in standby


def delivery_trigger(settings: Settings, zone: str) -> BaseTrigger:
    """When the deliver job runs: ``schedule.deliver`` in ``zone``, and every subscriber's own
    schedule in theirs (a run sends only to whom it is due)."""
    main = CronTrigger.from_crontab(settings.schedule.deliver, timezone=zone)
    own = sorted(set(cadences(settings).values()))
    if not own:
        return main
    return OrTrigger([main, *(CronTrigger.from_crontab(line, timezone=tz) for line, tz in own)])


class Service:
    """The long-running process: a scheduler around :class:`App`."""

    def __init__(
        self,
        config: Path,
        settings: Settings,
        make_app: Callable[[Settings, threading.Event], App],
        *,
        role: str = "leader",
    ) -> None:
        assert role in ("leader", "worker")
        self.role = role
        self.config = config
        self.make_app = make_app
        self.stop = threading.Event()
        self.app = make_app(settings, self.stop)
        self._stamp = self._config_stamp()
        self._loader: threading.Thread | None = None  # loading an edited configuration
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": MISFIRE_GRACE},
            timezone=self.zone,
        )

    @property
    def zone(self) -> str:
        return self.app.settings.timezone or get_localzone_name() or "UTC"

    def _config_stamp(self) -> tuple[float, int] | None:
        try:
            st = self.config.stat()
        except OSError:
            return None
        return st.st_mtime, st.st_size

    def reload_if_changed(self) -> bool:
        stamp = self._config_stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            settings = load_settings(self.config)
            app = self.make_app(settings, self.stop)
            app.renderer.check()
        except Exception as exc:  # keep running on the last good configuration
            event(
                log,
                "config.rejected",
                level=logging.ERROR,
                path=self.config,
                reason=str(exc),
                keeping="last good configuration",
            )
            return False
        old = self.app.settings
        self.app = app
        event(log, "config.reloaded", path=self.config, subscribers=len(settings.subscribers))
        if (settings.schedule, settings.timezone, cadences(settings)) != (
            old.schedule,
            old.timezone,
            cadences(old),
        ):
            self._schedule_jobs()
        return True

    def _schedule_jobs(self) -> None:
        sched = self.app.settings.schedule
        if self.role == "leader":
            self.scheduler.add_job(
                self._job,
                IntervalTrigger(seconds=max(1.0, sched.poll)),
                args=["poll"],
                id="poll",
                name="poll the inbox",
                replace_existing=True,
            )
        self.scheduler.add_job(
            self._job,
            delivery_trigger(self.app.settings, self.zone),
            args=["deliver"],
            id="deliver",
            name="deliver digests",
            replace_existing=True,
        )

    def _job(self, kind: str) -> None:
        if self.stop.is_set():
            return
        app = self.app  # a configuration loading meanwhile takes over at the next job
        try:
            app.run_job(kind, send=kind == "deliver", lead=self.role == "leader")
        except Exception as exc:  # a failed run is logged and tried again next time
            event(log, f"{kind}.failed", level=logging.ERROR, reason=f"{type(exc).__name__}: {exc}")
            log.debug("traceback", exc_info=True)

    def run(self, *, install_signals: bool = True) -> bool:
        """Lead, schedule, and run until SIGTERM/SIGINT; False when the leader lock was lost."""
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._on_signal)
        if self.role == "worker":
            return self._work()
        self.app.prepare_store()
        leader = leader_for(self.app.engine, fallback_dir=self.config.resolve().parent)
        if not self._lead(leader):
            event(log, "service.stopped")
            return True
        lost = False
        try:
            http = self._start_http()
        except OSError:
            leader.release()
            return False
        try:
            self._schedule_jobs()
            self.scheduler.add_job(self._job, args=["poll"], id="first-poll", name="first poll")
            self.scheduler.start()
            deliver_job = self.scheduler.get_job("deliver")
            event(
                log,
                "service.started",
                config=self.config,
                timezone=self.zone,
                poll_seconds=self.app.settings.schedule.poll,
                next_delivery=deliver_job.next_run_time.isoformat() if deliver_job else "-",
            )
            while not self.stop.wait(2.0):
                if not leader.holds():
                    event(
                        log,
                        "leader.lost",
                        level=logging.ERROR,
                        hint="the database connection dropped; exiting",
                    )
                    lost = True
                    self.stop.set()
                    break
                self.reload_if_changed_between_jobs()
            self.scheduler.shutdown(wait=True)  # the current step finishes first
        finally:
            if http:
                http.stop()
            leader.release()
        event(log, "service.stopped")
        return not lost

    def _work(self) -> bool:
        """A delivery worker: the deliver job on its cron line until SIGTERM/SIGINT."""
        self.app.prepare_store(sync=False)
        self._schedule_jobs()
        self.scheduler.start()
        deliver_job = self.scheduler.get_job("deliver")
        event(
            log,
            "worker.started",
            config=self.config,
            pid=os.getpid(),
            timezone=self.zone,
            next_delivery=deliver_job.next_run_time.isoformat() if deliver_job else "-",
        )
        while not self.stop.wait(2.0):
            self.reload_if_changed_between_jobs()
        self.scheduler.shutdown(wait=True)  # the current send finishes first
        event(log, "worker.stopped")
        return True

    def _start_http(self) -> Server | None:
        """The web server on its thread (None when ``http.enabled`` is off); OSError when it cannot listen."""
        cfg = self.app.settings.http
        if not cfg.enabled:
            return None
        server = Server(lambda: self.app, host=cfg.host, port=cfg.port)
        try:
            if server.start():
                return server
            reason = "the web server did not start"
        except PortTaken as exc:
            reason = str(exc)
        event(log, "http.failed", level=logging.ERROR, reason=reason)
        raise OSError(reason)

    def _lead(self, leader: Leader) -> bool:
        """Take the leader lock, waiting in standby while another process holds it."""
        if not leader.try_acquire():
            event(
                log,
                "leader.standby",
                reason="another paperboy run schedules for this database",
                retry_seconds=LEADER_RETRY,
            )
            while not leader.try_acquire():
                if self.stop.wait(LEADER_RETRY):
                    return False
        event(log, "leader.acquired", pid=os.getpid())
        return True

    def reload_if_changed_between_jobs(self) -> None:
        """Pick up a config edit promptly, on a thread of its own: loading a big configuration
        (a second for 10,000 subscribers) never holds up a poll or a delivery, which go on
        with the last good configuration until the new one is ready."""
        loading = self._loader is not None and self._loader.is_alive()
        if self._config_stamp() != self._stamp and not self.stop.is_set() and not loading:
            self._loader = threading.Thread(target=self.reload_if_changed, name="config-reload", daemon=True)
            self._loader.start()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        event(log, "service.stopping", signal=signal.Signals(signum).name)
        self.stop.set()
