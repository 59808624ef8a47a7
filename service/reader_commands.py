"""The ``paperboy`` commands about readers: what their next email says (``preview``),
why a paper did or did not come (``explain``), the operator's opt-out and its undo
(``unsubscribe``, ``resubscribe``), and fitting their learned tastes now (``learn``).
:mod:`service.cli` finds them in :data:`COMMANDS`, beside
:mod:`service.commands`' own."""

from __future__ import annotations

import argparse
import logging
import sys

from sqlmodel import Session

from . import store
from .commands import OK, UsageError, _app
from .log import event
from .settings import Settings

log = logging.getLogger("paperboy")


def cmd_preview(args: argparse.Namespace, settings: Settings) -> int:
    if settings.subscriber(args.email) is None:
        raise UsageError(f"{args.email} is not a subscriber in {args.config}")
    app = _app(settings)
    app.prepare_store()
    app.match()
    app.learn()  # what the next delivery run would fit first
    with store.reading(app.engine) as session:
        sub = store.subscriber_by_email(session=session, email=args.email)
        assert sub is not None
        from .compose import next_digest, paper_limits

        limits = paper_limits(settings)[sub.email]
        digest = next_digest(session, sub, settings=settings, limits=limits, at=app.clock())
    if digest is None:
        print(f"nothing pending for {args.email}: no email would be sent", file=sys.stderr)
        return OK
    from .message import list_id

    mail = app.renderer.message(digest, sender=settings.email.from_, list_id=list_id(settings.email.from_))
    if args.format == "eml":
        data = mail.data
    else:
        part = mail.parse().get_body(("plain",) if args.format == "text" else ("html",))
        assert part is not None
        data = str(part.get_content()).encode()
    if args.output:
        args.output.write_bytes(data)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.buffer.write(data)
    return OK


def cmd_explain(args: argparse.Namespace, settings: Settings) -> int:
    from .curate import find_paper
    from .rulebook import subscriber_rules, topic_rules
    from .rules import explain

    wanted = settings.subscriber(args.email)
    if wanted is None:
        raise UsageError(f"{args.email} is not a subscriber in {args.config}")
    app = _app(settings)
    app.prepare_store()
    with store.reading(app.engine) as session:
        paper = find_paper(session, args.paper)
        sub = store.subscriber_by_email(session=session, email=wanted.email)
        delivery = (
            store.find_delivery(session=session, subscriber_id=sub.id, paper_id=paper.id)
            if sub is not None and sub.id is not None and paper.id is not None
            else None
        )
        taste = _taste_lines(session, sub, paper)
    explanation = explain(subscriber_rules(wanted), topic_rules(settings), paper.title, paper.abstract)
    print(f"paper: {paper.title}")
    print(f"  first seen {paper.first_seen_at:%Y-%m-%d %H:%M} UTC in {paper.source}:{paper.line}")
    print(f"subscriber: {wanted.email}")
    print(explanation.render(), end="")
    if delivery is not None:
        when = f" {delivery.sent_at:%Y-%m-%d %H:%M} UTC" if delivery.sent_at else ""
        error = f"; last error: {delivery.last_error}" if delivery.last_error else ""
        via = ", ".join(delivery.via)
        print(f"store: delivery {delivery.state}{when}, score {delivery.score}, via {via}{error}")
    elif explanation.match is not None:
        print(
            "store: no delivery recorded: papers are matched when first seen, and a new or edited "
            f"rule receives the last {settings.backfill} days (backfill); this one is older, or the "
            f"rule changed since. To queue it: paperboy rematch --since DAYS {wanted.email}"
        )
    else:
        print("store: no delivery recorded")
    for line in taste:
        print(line)
    return OK


def _taste_lines(session: Session, sub: store.Subscriber | None, paper: store.Paper) -> list[str]:
    """``explain``'s lines about the reader's learned taste and this paper."""
    kept = None
    if sub is not None and sub.id is not None and paper.id is not None:
        kept = store.models(session=session, subscriber_ids=[sub.id]).get(sub.id)
    if kept is None or sub is None or sub.id is None or paper.id is None:
        return ["taste: none learned yet (no ratings or likes): the email keeps the rules' order"]
    from .taste.why import reasons

    why = reasons(session, sub.id, kept, [(paper.id, paper.title, paper.abstract)])[paper.id]
    lines = [
        f"taste: learned from {why.likes} liked and {why.dislikes} disliked papers; "
        f"score {why.score:+.2f}, counting {why.weight:.0%} beside the rules' score",
    ]
    if why.words:
        lines.append("  words that weighed most: " + ", ".join(f"{w} ({part:+.3f})" for w, part in why.words))
    if why.nearest is not None:
        lines.append(f"  most like a paper they liked: {why.nearest[0]} (similarity {why.nearest[1]:.2f})")
    return lines


def cmd_unsubscribe(args: argparse.Namespace, settings: Settings) -> int:
    """The operator's opt-out for a reader (who wrote in, or bounced): as one click would."""
    app = _app(settings)
    app.prepare_store()
    with store.transaction(app.engine) as session:
        known = store.subscriber_by_email(session=session, email=args.email)
        already = known is not None and known.unsubscribed_at is not None
        sub = store.unsubscribe(session=session, email=args.email, at=app.clock())
    if sub is None:
        raise UsageError(f"{args.email} is not a subscriber in the store")
    if already:
        print(f"{sub.email} had unsubscribed already; nothing changed")
        return OK
    event(log, "subscriber.unsubscribed", subscriber=sub.id, email=sub.email, via="operator")
    print(f"{sub.email} is unsubscribed: nothing more is sent (undo: paperboy resubscribe {sub.email})")
    return OK


def cmd_resubscribe(args: argparse.Namespace, settings: Settings) -> int:
    if settings.subscriber(args.email) is None:
        raise UsageError(f"{args.email} is not a subscriber in {args.config}")
    app = _app(settings)
    app.prepare_store()
    with store.transaction(app.engine) as session:
        was_out = store.resubscribe(session=session, email=args.email)
    if was_out:
        event(log, "subscriber.resubscribed", email=args.email.lower())
        print(f"{args.email} receives digests again (new papers from now on)")
    else:
        print(f"{args.email} had not unsubscribed; nothing changed")
    return OK


def cmd_learn(args: argparse.Namespace, settings: Settings) -> int:
    """Refit now the tastes whose ratings or likes changed (the next delivery run would)."""
    app = _app(settings)
    app.prepare_store()
    fitted = app.learn()
    with store.reading(app.engine) as session:
        states = store.taste_states(session=session)
    models = sum(s.fitted for s in states.values())
    print(f"fitted {fitted} tastes; {models} readers have a learned taste")
    return OK


COMMANDS = {
    "learn": cmd_learn,
    "preview": cmd_preview,
    "explain": cmd_explain,
    "unsubscribe": cmd_unsubscribe,
    "resubscribe": cmd_resubscribe,
}
