"""The configuration: one YAML file, its schema, and loading it.

- :mod:`.schema`: the pydantic models, one per section, unknown keys refused
  (the ``email`` section's in :mod:`.mail`; what they share in :mod:`.base`);
- :mod:`.addresses`: e-mail addresses and names; :mod:`.keys`: the DKIM key;
- :mod:`.loading`: reading the YAML with line numbers, ``${VAR}``, errors
  that name the file, the line and the key;
- :mod:`.cron`: checking cron lines without importing the scheduler;
- :mod:`.cache`: a big configuration kept validated between processes.
"""

from .loading import DEFAULT_CONFIG, ConfigError, load_settings, parse_settings
from .mail import Email, Smtp
from .schema import (
    TOPIC_NAME,
    Feeds,
    Http,
    Schedule,
    Settings,
    SubscriberConfig,
    TopicConfig,
)

__all__ = [
    "DEFAULT_CONFIG",
    "TOPIC_NAME",
    "ConfigError",
    "Email",
    "Feeds",
    "Http",
    "Schedule",
    "Settings",
    "Smtp",
    "SubscriberConfig",
    "TopicConfig",
    "load_settings",
    "parse_settings",
]
