"""What :class:`RelayConfig` accepts: the values the recorder is built from are checked
when the configuration is made, the same in the compiled and the pure build."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pop3tap.relay import Endpoint, RelayConfig
from pop3tap.tls import TlsConfig

UPSTREAM = Endpoint("127.0.0.1", 110)

#: Anything but the type a field declares (the compiled recorder refuses it at run time).
NOT_A_BOOL = st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=3))
NOT_AN_INT = st.one_of(st.none(), st.booleans(), st.floats(), st.text(max_size=3))


def test_the_defaults_and_plain_values_are_accepted() -> None:
    config = RelayConfig(
        upstream=UPSTREAM, keep_secrets=True, max_line=80, tls=TlsConfig(intercept_stls=False)
    )
    assert (config.keep_secrets, config.max_line, config.tls.intercept_stls) == (True, 80, False)


@given(field=st.sampled_from(["keep_secrets", "fault_rewrite"]), value=NOT_A_BOOL)
def test_a_flag_that_is_not_a_bool_is_refused_by_name(field: str, value: Any) -> None:
    """``keep_secrets=1`` ran in the pure build but made every session crash in the
    compiled one, after the relay had started: refused up front in both."""
    with pytest.raises(TypeError, match=rf"RelayConfig\.{field} must be True or False"):
        RelayConfig(upstream=UPSTREAM, **{field: value})


@given(value=NOT_A_BOOL)
def test_stls_interception_that_is_not_a_bool_is_refused(value: Any) -> None:
    with pytest.raises(TypeError, match=r"tls\.intercept_stls must be True or False"):
        RelayConfig(upstream=UPSTREAM, tls=TlsConfig(intercept_stls=value))


@given(value=NOT_AN_INT | st.integers(max_value=0))
def test_a_max_line_that_is_not_a_positive_int_is_refused(value: Any) -> None:
    with pytest.raises((TypeError, ValueError), match=r"RelayConfig\.max_line must be"):
        RelayConfig(upstream=UPSTREAM, max_line=value)
