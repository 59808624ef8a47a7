"""The store: where paperboy remembers papers, subscribers and every delivery.

One package, a module per concern, every public name re-exported here so
callers read ``store.claim_due(...)``:

- :mod:`.tables`: every SQLModel table, and the states of a delivery;
- :mod:`.engine`: engines (SQLite in WAL mode, ``BEGIN IMMEDIATE``) and sessions;
- :mod:`.migrate`: the schema's migrations (Alembic), run by every command;
- :mod:`.papers`: ingested files, papers, topic papers;
- :mod:`.subscribers`: the subscribers table following the configuration, opt-outs;
- :mod:`.outbox`: the deliveries' state machine (claim, fail, release, cancel);
- :mod:`.marks`: sent marks, recorded at once and folded into the outbox;
- :mod:`.runs`: job runs and the counts ``status`` shows.

Query functions are keyword-only and take a session; they never open one and
never commit. Timestamps are timezone-aware UTC, passed in by the caller.
"""

from .engine import make_engine, reading, transaction
from .marks import FoldReport, NewSentMark, fold_sent, record_sent
from .migrate import FIRST_RELEASE, NewerDatabase, check_known, head_revision, schema_revision, upgrade
from .outbox import (
    NewDelivery,
    OutboxRow,
    add_deliveries,
    cancel_pending,
    claim_due,
    find_delivery,
    mark_failed_attempt,
    outbox_rows,
    release,
)
from .papers import (
    Forgotten,
    NewPaper,
    NewTopicPaper,
    add_papers,
    add_topic_papers,
    feed_marks,
    file_by_hash,
    file_known,
    files_named,
    find_paper,
    forget_papers,
    latest_papers,
    mark_matched,
    paper_seen,
    paper_texts,
    papers_only_from,
    papers_since,
    record_file,
    search_papers,
    subscriber_papers,
    topic_papers,
    unmatched_papers,
)
from .runs import (
    counts,
    daily_activity,
    failures,
    last_run,
    latest_runs,
    record_run,
    retrying,
    run_stats,
    subscriber_overview,
)
from .subscribers import (
    active_subscribers,
    fingerprints,
    opted_out,
    record_fingerprints,
    resubscribe,
    subscriber_by_email,
    subscriber_by_token,
    subscribers_by_id,
    sync_subscribers,
    unsubscribe,
)
from .tables import (
    LIVE_STATES_SQL,
    Delivery,
    DeliveryState,
    IngestedFile,
    JobRun,
    Paper,
    PaperFile,
    RuleFingerprint,
    SentMark,
    Subscriber,
    TopicPaper,
)

__all__ = [
    "FIRST_RELEASE",
    "LIVE_STATES_SQL",
    "Delivery",
    "DeliveryState",
    "FoldReport",
    "Forgotten",
    "IngestedFile",
    "JobRun",
    "NewDelivery",
    "NewPaper",
    "NewSentMark",
    "NewTopicPaper",
    "NewerDatabase",
    "OutboxRow",
    "Paper",
    "PaperFile",
    "RuleFingerprint",
    "SentMark",
    "Subscriber",
    "TopicPaper",
    "active_subscribers",
    "add_deliveries",
    "add_papers",
    "add_topic_papers",
    "cancel_pending",
    "check_known",
    "claim_due",
    "counts",
    "daily_activity",
    "failures",
    "feed_marks",
    "file_by_hash",
    "file_known",
    "files_named",
    "find_delivery",
    "find_paper",
    "fingerprints",
    "fold_sent",
    "forget_papers",
    "head_revision",
    "last_run",
    "latest_papers",
    "latest_runs",
    "make_engine",
    "mark_failed_attempt",
    "mark_matched",
    "opted_out",
    "outbox_rows",
    "paper_seen",
    "paper_texts",
    "papers_only_from",
    "papers_since",
    "reading",
    "record_file",
    "record_fingerprints",
    "record_run",
    "record_sent",
    "release",
    "resubscribe",
    "retrying",
    "run_stats",
    "schema_revision",
    "search_papers",
    "subscriber_by_email",
    "subscriber_by_token",
    "subscriber_overview",
    "subscriber_papers",
    "subscribers_by_id",
    "sync_subscribers",
    "topic_papers",
    "transaction",
    "unmatched_papers",
    "unsubscribe",
    "upgrade",
]
