"""The configuration's rules as the matcher reads them: each subscriber's and each topic's
:class:`~service.rules.RuleSet`, and one :class:`~service.rules.Index` over them all.

Built from validated settings (every term and query parsed once already), by the cycle, by
``rematch`` and ``explain``, and by ``check``, which imports nothing of the store."""

from __future__ import annotations

from .rules import Index, RuleSet
from .settings import Settings, SubscriberConfig


def subscriber_rules(sub: SubscriberConfig) -> RuleSet:
    return RuleSet.build(sub.email.lower(), sub.keywords, sub.exclude, query=sub.query, topics=sub.topics)


def topic_rules(settings: Settings) -> dict[str, RuleSet]:
    return {
        name: RuleSet.build(name, t.keywords, t.exclude, query=t.query) for name, t in settings.topics.items()
    }


def build_index(settings: Settings, subscribers: list[SubscriberConfig] | None = None) -> Index:
    """The rules of ``subscribers`` (default: everyone) and of every topic, in one index."""
    people = settings.subscribers if subscribers is None else subscribers
    return Index([subscriber_rules(s) for s in people], list(topic_rules(settings).values()))
