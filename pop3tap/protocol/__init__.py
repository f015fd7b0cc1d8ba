"""Sans-IO POP3 core: feed it the bytes each direction carried, get events back.

No trio, no sockets, no msgpack: the relay, the capture reader and the replay server all
drive the same :class:`SessionObserver`, so they agree on how a session is paired.
"""

from pop3tap.protocol._commands import (
    SECRET_PLACEHOLDER,
    WORD_SEPARATORS,
    describe_command,
    expects_multiline,
    is_known_command,
    mask_arguments,
    mask_line,
    opens_auth,
    parse_status,
    secret_verb,
    shown_command,
    split_command,
)
from pop3tap.protocol._events import (
    CommandSent,
    Direction,
    EndOfStream,
    Event,
    Exchange,
    Flag,
    Greeting,
    PairingLost,
    SaslChallenge,
    SaslResponse,
    StartTls,
    Status,
    StrayLine,
    Suppressed,
    UnsolicitedLine,
)
from pop3tap.protocol._masking import SecretMasker, Verdict
from pop3tap.protocol._observer import SessionObserver, SessionSummary

__all__ = [
    "SECRET_PLACEHOLDER",
    "WORD_SEPARATORS",
    "CommandSent",
    "Direction",
    "EndOfStream",
    "Event",
    "Exchange",
    "Flag",
    "Greeting",
    "PairingLost",
    "SaslChallenge",
    "SaslResponse",
    "SecretMasker",
    "SessionObserver",
    "SessionSummary",
    "StartTls",
    "Status",
    "StrayLine",
    "Suppressed",
    "UnsolicitedLine",
    "Verdict",
    "describe_command",
    "expects_multiline",
    "is_known_command",
    "mask_arguments",
    "mask_line",
    "opens_auth",
    "parse_status",
    "secret_verb",
    "shown_command",
    "split_command",
]
