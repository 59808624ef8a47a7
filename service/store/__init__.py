"""The store: where paperboy remembers papers, subscribers and every delivery.

One package, a module per concern, every public name re-exported here so
callers read ``store.claim_due(...)``:

- :mod:`.tables`: every SQLModel table, and the states of a delivery;
- :mod:`.engine`: engines (SQLite in WAL mode, ``BEGIN IMMEDIATE``) and sessions;
- :mod:`.migrate`: the schema's migrations (Alembic), run by every command;
- :mod:`.papers`: ingested files, papers, topic papers;
- :mod:`.subscribers`: the subscribers table following the configuration, opt-outs;
- :mod:`.outbox`: the deliveries' state machine (claim, sent marks, fold, fail,
  release, cancel);
- :mod:`.runs`: job runs and the counts ``status`` shows.

Query functions are keyword-only and take a session; they never open one and
never commit. Timestamps are timezone-aware UTC, passed in by the caller.
"""

from .engine import make_engine, reading, transaction
from .migrate import FIRST_RELEASE, head_revision, schema_revision, upgrade
from .outbox import (
    FoldReport,
    NewDelivery,
    NewSentMark,
    OutboxRow,
    add_deliveries,
    cancel_pending,
    claim_due,
    find_delivery,
    fold_sent,
    mark_failed_attempt,
    outbox_rows,
    record_sent,
    release,
)
from .papers import (
    NewPaper,
    NewTopicPaper,
    add_papers,
    add_topic_papers,
    file_known,
    find_paper,
    latest_papers,
    mark_matched,
    paper_seen,
    paper_texts,
    record_file,
    search_papers,
    subscriber_papers,
    topic_papers,
    unmatched_papers,
)
from .runs import counts, daily_activity, failures, last_run, record_run, run_stats
from .subscribers import (
    active_subscribers,
    opted_out,
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
    "IngestedFile",
    "JobRun",
    "NewDelivery",
    "NewPaper",
    "NewSentMark",
    "NewTopicPaper",
    "OutboxRow",
    "Paper",
    "SentMark",
    "Subscriber",
    "TopicPaper",
    "active_subscribers",
    "add_deliveries",
    "add_papers",
    "add_topic_papers",
    "cancel_pending",
    "claim_due",
    "counts",
    "daily_activity",
    "failures",
    "file_known",
    "find_delivery",
    "find_paper",
    "fold_sent",
    "head_revision",
    "last_run",
    "latest_papers",
    "make_engine",
    "mark_failed_attempt",
    "mark_matched",
    "opted_out",
    "outbox_rows",
    "paper_seen",
    "paper_texts",
    "reading",
    "record_file",
    "record_run",
    "record_sent",
    "release",
    "resubscribe",
    "run_stats",
    "schema_revision",
    "search_papers",
    "subscriber_by_email",
    "subscriber_by_token",
    "subscriber_papers",
    "subscribers_by_id",
    "sync_subscribers",
    "topic_papers",
    "transaction",
    "unmatched_papers",
    "unsubscribe",
    "upgrade",
]
