"""A corpus of quirky POP3 sessions around AUTH, each pinned to the capture it must leave
and the exchanges every view must pair (issue 11 item 1, issue 10 item 2).

Secrets are PLAIN blobs (RFC 4616) and LOGIN answers; the capture must mask them and keep
every command pipelined behind an AUTH once the server's answer proves it was one.
"""

from __future__ import annotations

import base64

from scripted import Case

BLOB = base64.b64encode(b"\x00carol\x00quirky-Secret-7")
WRONG = base64.b64encode(b"\x00carol\x00not-the-pw-42")
LOGIN_USER = base64.b64encode(b"carol-login-name")
LOGIN_PASS = base64.b64encode(b"quirky-login-pw-9")
LIST_ANSWER = b"+OK 2 messages\r\n1 10\r\n2 20\r\n.\r\n"

CORPUS = [
    Case(
        "AUTH with an initial response, STAT LIST QUIT pipelined behind it",
        server=[
            ("read", 1),
            ("send", b"+OK Logged in.\r\n"),
            ("read", 3),
            ("send", b"+OK 2 30\r\n" + LIST_ANSWER + b"+OK bye\r\n"),
        ],
        client=[(b"AUTH PLAIN " + BLOB + b"\r\nSTAT\r\nLIST\r\nQUIT\r\n", b"+OK bye")],
        secrets=(BLOB,),
        expect_c2s=b"AUTH PLAIN ********\r\nSTAT\r\nLIST\r\nQUIT\r\n",
        expect_exchanges=[
            ("AUTH", "PLAIN ********", "+OK", ()),
            ("STAT", "", "+OK", ()),
            ("LIST", "", "+OK", ()),
            ("QUIT", "", "+OK", ()),
        ],
    ),
    Case(
        "SASL answer and commands pipelined before the server's +",
        server=[
            ("read", 1),
            ("send", b"+ \r\n"),
            ("read", 1),
            ("send", b"+OK Logged in.\r\n"),
            ("read", 2),
            ("send", b"+OK 2 30\r\n+OK bye\r\n"),
        ],
        client=[(b"AUTH PLAIN\r\n" + BLOB + b"\r\nSTAT\r\nQUIT\r\n", b"+OK bye")],
        secrets=(BLOB,),
        expect_c2s=b"AUTH PLAIN\r\n********\r\nSTAT\r\nQUIT\r\n",
        expect_exchanges=[
            ("AUTH", "PLAIN", "+OK", (("+", "0"), ("c", "********"))),
            ("STAT", "", "+OK", ()),
            ("QUIT", "", "+OK", ()),
        ],
    ),
    Case(
        "AUTH LOGIN answers for two challenges pipelined, then STAT",
        server=[
            ("read", 1),
            ("send", b"+ VXNlcm5hbWU6\r\n"),
            ("read", 1),
            ("send", b"+ UGFzc3dvcmQ6\r\n"),
            ("read", 1),
            ("send", b"+OK Logged in.\r\n"),
            ("read", 2),
            ("send", b"+OK 2 30\r\n+OK bye\r\n"),
        ],
        client=[
            (
                b"AUTH LOGIN\r\n" + LOGIN_USER + b"\r\n" + LOGIN_PASS + b"\r\nSTAT\r\nQUIT\r\n",
                b"bye",
            )
        ],
        secrets=(LOGIN_USER, LOGIN_PASS),
        expect_c2s=b"AUTH LOGIN\r\n********\r\n********\r\nSTAT\r\nQUIT\r\n",
        expect_exchanges=[
            (
                "AUTH",
                "LOGIN",
                "+OK",
                (("+", "12"), ("c", "********"), ("+", "12"), ("c", "********")),
            ),
            ("STAT", "", "+OK", ()),
            ("QUIT", "", "+OK", ()),
        ],
    ),
    Case(
        "AUTH cancelled with *, then a login with an initial response",
        server=[
            ("read", 1),
            ("send", b"+ \r\n"),
            ("read", 1),
            ("send", b"-ERR Authentication aborted by client.\r\n"),
            ("read", 1),
            ("send", b"+OK Logged in.\r\n"),
            ("read", 1),
            ("send", b"+OK 2 30\r\n"),
            ("read", 1),
            ("send", b"+OK bye\r\n"),
        ],
        client=[
            (b"AUTH PLAIN\r\n", b"+ \r\n"),
            (b"*\r\n", b"aborted"),
            (b"AUTH PLAIN " + BLOB + b"\r\n", b"Logged in"),
            (b"STAT\r\n", b"+OK 2"),
            (b"QUIT\r\n", b"bye"),
        ],
        secrets=(BLOB,),
        expect_c2s=b"AUTH PLAIN\r\n*\r\nAUTH PLAIN ********\r\nSTAT\r\nQUIT\r\n",
        expect_exchanges=[
            ("AUTH", "PLAIN", "-ERR", (("+", "0"), ("c", "*"))),
            ("AUTH", "PLAIN ********", "+OK", ()),
            ("STAT", "", "+OK", ()),
            ("QUIT", "", "+OK", ()),
        ],
    ),
    Case(
        "a refused AUTH and a second one pipelined behind it",
        server=[
            ("read", 1),
            ("send", b"-ERR [AUTH] Authentication failed.\r\n"),
            ("read", 1),
            ("send", b"+OK Logged in.\r\n"),
            ("read", 2),
            ("send", b"+OK 2 30\r\n+OK bye\r\n"),
        ],
        client=[
            (
                b"AUTH PLAIN " + WRONG + b"\r\nAUTH PLAIN " + BLOB + b"\r\nSTAT\r\nQUIT\r\n",
                b"+OK bye",
            )
        ],
        secrets=(WRONG, BLOB),
        expect_c2s=b"AUTH PLAIN ********\r\nAUTH PLAIN ********\r\nSTAT\r\nQUIT\r\n",
        expect_exchanges=[
            ("AUTH", "PLAIN ********", "-ERR", ()),
            ("AUTH", "PLAIN ********", "+OK", ()),
            ("STAT", "", "+OK", ()),
            ("QUIT", "", "+OK", ()),
        ],
    ),
    Case(
        "SASL data pipelined behind an AUTH the server refuses at once",
        server=[
            ("read", 1),
            ("send", b"-ERR [AUTH] Unsupported mechanism\r\n"),
            ("read", 1),
            ("send", b"-ERR Unknown command\r\n"),
            ("read", 1),
            ("send", b"+OK bye\r\n"),
        ],
        client=[(b"AUTH PLAIN\r\n" + BLOB + b"\r\nQUIT\r\n", b"+OK bye")],
        secrets=(BLOB,),
        expect_c2s=b"AUTH PLAIN\r\n********\r\nQUIT\r\n",
        expect_exchanges=[
            ("AUTH", "PLAIN", "-ERR", ()),
            ("********", "", "-ERR", ()),
            ("QUIT", "", "+OK", ()),
        ],
    ),
]
