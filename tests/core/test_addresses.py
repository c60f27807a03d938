"""Addresses in socat's syntax: lexing, parsing, validation, canonical form."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from sockimux.core.address_lexer import join_words, quote, scan, split_words
from sockimux.core.address_parser import parse_address
from sockimux.core.addresses import (
    MAX_COUNT,
    Address,
    Bind,
    Exec,
    Family,
    Role,
    Stdio,
    TcpConnect,
    TcpListen,
    UnixConnect,
    UnixListen,
    check_role,
    keyword,
)
from sockimux.core.errors import AddressError, LocalError, SockimuxError

SSH_SUBFLOW = ("ssh", "somehost", "socat", "STDIO", "UNIX-CONNECT:/tmp/sockB")

VALID: list[tuple[str, Address]] = [
    # The original README's subflow, as the shell hands it to socat (the
    # double quotes are the shell's; socat sees the backslash).
    ("EXEC:ssh somehost socat STDIO UNIX-CONNECT\\:/tmp/sockB", Exec(" ".join(SSH_SUBFLOW))),
    ("EXEC:'ssh somehost socat STDIO UNIX-CONNECT\\:/tmp/sockB'", Exec(" ".join(SSH_SUBFLOW))),
    ('EXEC:"ssh somehost socat STDIO UNIX-CONNECT\\:/tmp/sockB",count=4',
     Exec(" ".join(SSH_SUBFLOW), count=4)),
    ("EXEC:'/path/to/sockimux /tmp/sockB'", Exec("/path/to/sockimux /tmp/sockB")),
    # socat(1)'s example: the command's own commas ride inside the quotes.
    ('EXEC:"ssh modemserver.us.org socat - /dev/ttyS0,nonblock,rawer"',
     Exec("ssh modemserver.us.org socat - /dev/ttyS0,nonblock,rawer")),
    ("exec:ls", Exec("ls")),
    ("STDIO", Stdio()),
    ("-", Stdio()),
    ("stdio", Stdio()),
    ("UNIX-CONNECT:/tmp/sockA", UnixConnect("/tmp/sockA")),
    ("unix:/tmp/sockA", UnixConnect("/tmp/sockA")),
    ("LOCAL:/tmp/sockA,COUNT=8", UnixConnect("/tmp/sockA", count=8)),
    ("UNIX-CONNECT:'/tmp/with:colon,comma'", UnixConnect("/tmp/with:colon,comma")),
    ("UNIX-CONNECT:/tmp/a\\ b", UnixConnect("/tmp/a b")),
    ("TCP:127.0.0.1:22", TcpConnect("127.0.0.1", 22)),
    ("TCP:far.example.org:7000", TcpConnect("far.example.org", 7000)),
    ("tcp-connect:[::1]:22", TcpConnect("::1", 22)),
    ("TCP:[0:0::1]:22", TcpConnect("::1", 22)),
    ("TCP4:far:7000", TcpConnect("far", 7000, Family.IPV4)),
    ("TCP6:[2001:db8::2]:7000", TcpConnect("2001:db8::2", 7000, Family.IPV6)),
    ("TCP:10.0.0.2:7000,bind=10.0.1.1", TcpConnect("10.0.0.2", 7000, bind=Bind(IPv4Address("10.0.1.1")))),
    ("TCP:10.0.0.2:7000,bind=10.0.1.1:40000,so-bindtodevice=eth1,connect-timeout=2.5,count=3",
     TcpConnect("10.0.0.2", 7000, bind=Bind(IPv4Address("10.0.1.1"), 40000), device="eth1",
                connect_timeout=2.5, count=3)),
    ("TCP:far:7000,BindToDevice=wlan0", TcpConnect("far", 7000, device="wlan0")),
    ("TCP:far:7000,if=wlan0", TcpConnect("far", 7000, device="wlan0")),
    ("TCP:[fe80::1%eth0]:7000,bind=[fe80::2]:4000",
     TcpConnect("fe80::1%eth0", 7000, bind=Bind(IPv6Address("fe80::2"), 4000))),
    ("UNIX-LISTEN:/tmp/sockA", UnixListen("/tmp/sockA")),
    ("unix-l:/tmp/sockA,mode=0660,fork", UnixListen("/tmp/sockA", 0o660)),
    ("UNIX-LISTEN:/tmp/sockA,perm=600", UnixListen("/tmp/sockA", 0o600)),
    ("TCP-LISTEN:7000", TcpListen(7000)),
    ("TCP-L:7000,reuseaddr,fork,bind=10.0.0.2", TcpListen(7000, bind=IPv4Address("10.0.0.2"))),
    ("TCP6-LISTEN:7000,bind=[::1],so-reuseaddr=1", TcpListen(7000, Family.IPV6, IPv6Address("::1"))),
    ("TCP4-L:7000,bind=0.0.0.0", TcpListen(7000, Family.IPV4, IPv4Address("0.0.0.0"))),
    ("  TCP:far:7000  ", TcpConnect("far", 7000)),
    # socat's pf= (docs/API.md: TCP-LISTEN:PORT,pf=ip6): the family, as TCP4/TCP6 say it
    ("TCP-LISTEN:7000,pf=ip6", TcpListen(7000, Family.IPV6)),
    ("TCP-L:7000,PF=ip4,bind=127.0.0.1", TcpListen(7000, Family.IPV4, IPv4Address("127.0.0.1"))),
    ("TCP:localhost:7000,pf=ip6", TcpConnect("localhost", 7000, Family.IPV6)),
    ("TCP4:far:7000,protocol-family=ipv4", TcpConnect("far", 7000, Family.IPV4)),
]


@pytest.mark.parametrize(("text", "expected"), VALID)
def test_valid_addresses_parse_to_their_value(text: str, expected: Address) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(("text", "expected"), VALID)
def test_canonical_form_parses_back_and_is_stable(text: str, expected: Address) -> None:
    canonical = str(parse_address(text))
    assert parse_address(canonical) == expected
    assert str(parse_address(canonical)) == canonical


@pytest.mark.parametrize(("text", "canonical"), [
    ("exec:'ssh somehost socat STDIO UNIX-CONNECT\\:/tmp/sockB'",
     "EXEC:'ssh somehost socat STDIO UNIX-CONNECT:/tmp/sockB'"),
    ("-", "STDIO"),
    ("unix:/tmp/a,count=1", "UNIX-CONNECT:/tmp/a"),
    ("tcp6:[0:0::1]:22,if=eth0,count=2", "TCP6:[::1]:22,so-bindtodevice=eth0,count=2"),
    ("TCP:a:1,connect-timeout=.5,bind=[::1]:9", "TCP:a:1,bind=[::1]:9,connect-timeout=0.5"),
    ("TCP:a:1,bind=127.0.0.1:0", "TCP:a:1,bind=127.0.0.1"),  # socat's "any port"
    ("unix-l:/s,perm=660,fork", "UNIX-LISTEN:/s,mode=0660"),
    ("tcp-l:7000,fork,reuseaddr,bind=::", "TCP-LISTEN:7000,bind=[::]"),
    ("UNIX:'/tmp/it''s'", "UNIX-CONNECT:/tmp/its"),  # two quoted pieces, one token
    ("UNIX:/tmp/it\\'s", "UNIX-CONNECT:'/tmp/it\\'s'"),
    ("UNIX:/tmp/new\\nline\\ttab", "UNIX-CONNECT:'/tmp/new\\nline\\ttab'"),  # one log line
])
def test_canonical_form(text: str, canonical: str) -> None:
    assert str(parse_address(text)) == canonical


def test_exec_argv_is_split_as_socat_splits_it() -> None:
    assert parse_address("EXEC:ssh somehost socat STDIO UNIX-CONNECT\\:/tmp/sockB").argv == SSH_SUBFLOW  # type: ignore[union-attr]
    cases = {
        "EXEC:\"sh -c 'echo a b'\"": ("sh", "-c", "echo a b"),
        "EXEC:'prog a\\:b c,d'": ("prog", "a:b", "c,d"),
        "EXEC:prog (a:b,c) [d:e] {f,g}": ("prog", "(a:b,c)", "[d:e]", "{f,g}"),
        "EXEC:prog a\"b:c\"d": ("prog", "ab:cd"),
        "EXEC:prog  two   spaces ": ("prog", "two", "spaces"),
        "EXEC:prog a\\nb": ("prog", "a\nb"),
        "EXEC:\"prog ''\"": ("prog", ""),
    }
    for text, argv in cases.items():
        address = parse_address(text)
        assert isinstance(address, Exec) and address.argv == argv, text


BAD: list[tuple[str, str]] = [
    ("TCP:host:70000", "port must be 1-65535"),
    ("TCP:host:0", "port must be 1-65535"),
    ("TCP:host:ssh", "port must be 1-65535 (a number; service names are not looked up)"),
    ("TCP:host", "missing PORT (TCP:HOST:PORT)"),
    ("TCP", "missing HOST and PORT (TCP:HOST:PORT)"),
    ("TCP::22", "missing HOST"),
    ("TCP:::1:22", "too many parameters (TCP:HOST:PORT); an IPv6 host goes in brackets, e.g. TCP:[::1]:22"),
    ("TCP:10.0.0.256:22", "not a valid IPv4 address: '10.0.0.256'"),
    ("TCP:bad_host!:22", "not a valid host name or IP address: 'bad_host!'"),
    ("TCP:[10.0.0.1]:22", "host '[10.0.0.1]': brackets are for IPv6 addresses only"),
    ("TCP:[nothost]:22", "host must be an IP address, not '[nothost]'"),
    ("TCP4:[::1]:22", "host ::1 is IPv6, but TCP4 is IPv4 only"),
    ("TCP6:10.0.0.1:22", "host 10.0.0.1 is IPv4, but TCP6 is IPv6 only"),
    ("TCP:h:1,bind=eth0", "bind address must be an IP address, not 'eth0' "
                          "(an interface is so-bindtodevice=IFACE)"),
    ("TCP:h:1,bind=host.example", "bind address must be an IP address, not 'host.example' "
                                  "(an interface is so-bindtodevice=IFACE)"),
    ("TCP:h:1,bind=::1", "bind=::1: an IPv6 address goes in brackets, e.g. bind=[::1]"),
    ("TCP:h:1,bind=[::1]x", "bind=[::1]x: expected [ADDR] or [ADDR]:PORT"),
    ("TCP:h:1,bind=10.0.0.1:99999", "bind port must be 0-65535"),
    ("TCP:[::1]:22,bind=10.0.0.1", "bind address 10.0.0.1 is IPv4, but the host [::1] is IPv6"),
    ("TCP4:h:22,bind=[::1]", "bind address ::1 is IPv6, but TCP4 is IPv4 only"),
    ("TCP:h:1,bind", "option bind needs a value (bind=ADDR[:PORT])"),
    ("TCP:h:1,bind=1.2.3.4,BIND=1.2.3.5", "option bind given twice"),
    ("TCP:h:1,if=eth0,so-bindtodevice=eth1", "option so-bindtodevice given twice"),
    ("TCP:h:1,so-bindtodevice=a/b", "not a network interface name: 'a/b'"),
    ("TCP:h:1,so-bindtodevice=much-too-long-name", "not a network interface name: 'much-too-long-name'"),
    ("TCP:h:1,connect-timeout=0", "connect-timeout must be a number of seconds above 0"),
    ("TCP:h:1,connect-timeout=soon", "connect-timeout must be a number of seconds above 0"),
    ("TCP:h:1,connect-timeout=inf", "connect-timeout must be a number of seconds above 0"),
    ("TCP:h:1,nodelay", "unknown option 'nodelay' for TCP "
                        "(known: bind, connect-timeout, count, pf, so-bindtodevice)"),
    ("TCP:h:1,", "empty option (a stray ',')"),
    ("TCP:h:1,count=0", f"count must be 1-{MAX_COUNT}"),
    ("TCP:h:1,count=many", f"count must be 1-{MAX_COUNT}"),
    (f"TCP:h:1,count={MAX_COUNT + 1}", f"count must be 1-{MAX_COUNT}"),
    ("TCP:h:1,count", "option count needs a value (count=N)"),
    ("UNIX-CONNECT", "missing PATH (UNIX-CONNECT:PATH)"),
    ("UNIX-CONNECT:", "missing socket path"),
    ("UNIX-CONNECT:/" + "x" * 107, "socket path is too long (108 bytes, max 107)"),
    ("UNIX-CONNECT:/tmp/a\\0b", "contains a NUL character"),
    ("UNIX-CONNECT:/tmp/a:b", "too many parameters (UNIX-CONNECT:PATH)"),
    ("EXEC:ssh host socat STDIO UNIX-CONNECT:/tmp/sockB",
     "too many parameters (EXEC:COMMAND); quote the command (EXEC:'...') or escape its colons (\\:)"),
    ("EXEC:", "empty command"),
    ("EXEC:'   '", "empty command"),
    ("EXEC:''", "empty command"),
    ("EXEC:ls,pty", "unknown option 'pty' for EXEC (known: count)"),
    ("EXEC:'ssh host", "unclosed ' quote"),
    ('EXEC:"ssh host', 'unclosed " quote'),
    ("EXEC:ssh (host", "unclosed ( (no ))"),
    ("EXEC:ls \\", "ends with a lone backslash"),
    ("EXEC:\"ls 'a\"", "unclosed ' quote"),
    ("EXEC:" + "(" * 40, "quotes or brackets nested more than 32 deep"),
    ("STDIO:x", "STDIO takes no parameters"),
    ("STDIO,readbytes=4", "STDIO takes no options"),
    ("STDIO!!STDIO", "dual addresses (A!!B, one to read, one to write) are not supported"),
    ("UNIX-LISTEN:/s,mode=0999", "mode must be octal 0-0777, e.g. mode=0600"),
    ("UNIX-LISTEN:/s,mode=7777", "mode must be octal 0-0777"),
    ("UNIX-LISTEN:/s,count=2", "unknown option 'count' for UNIX-LISTEN (known: fork, mode)"),
    ("UNIX-LISTEN:/s,fork=0", "option fork cannot be changed: a listener always accepts many subflows"),
    ("TCP-LISTEN:7000,reuseaddr=0", "option so-reuseaddr cannot be changed: listeners always set it"),
    ("TCP-LISTEN:7000,bind=10.0.0.1:7000", "bind=10.0.0.1:7000: the port is the parameter "
                                          "(TCP-LISTEN:PORT,bind=ADDR)"),
    ("TCP-LISTEN:host:7000", "too many parameters (TCP-LISTEN:PORT)"),
    ("TCP4-LISTEN:7000,bind=[::]", "bind address :: is IPv6, but TCP4 is IPv4 only"),
    ("TCP-LISTEN:65536", "port must be 1-65535"),
    ("TCP-LISTEN:7000,pf=ip5", "pf must be ip4 or ip6, not 'ip5'"),
    ("TCP4-LISTEN:7000,pf=ip6", "pf=ip6 contradicts the IPv4 of the address type"),
    ("TCP:far:7000,pf", "option pf needs a value (pf=ip4)"),
    ("TCP-LISTEN:7000,pf=ip4,bind=[::1]", "bind address ::1 is IPv6, but TCP4 is IPv4 only"),
    ("SYSTEM:ls", "unknown address type 'SYSTEM' "
                  "(known: STDIO, UNIX-CONNECT, TCP, EXEC, UNIX-LISTEN, TCP-LISTEN)"),
    ("/tmp/sockB", "'/tmp/sockB' is not an address; a UNIX socket is UNIX-CONNECT:PATH "
                   "(or UNIX-LISTEN:PATH to listen)"),
    (":/tmp/x", "missing address type (e.g. TCP:HOST:PORT)"),
    ("", "empty address"),
    ("   ", "empty address"),
]


@pytest.mark.parametrize(("text", "reason"), BAD)
def test_bad_addresses_name_the_bad_part(text: str, reason: str) -> None:
    with pytest.raises(AddressError) as info:
        parse_address(text)
    message = str(info.value)
    shown = text if len(text) <= 120 else text[:117] + "..."
    assert message == f"bad address {shown!r}: {reason}"
    assert "\n" not in message


def test_address_error_is_a_usage_error() -> None:
    assert issubclass(AddressError, LocalError) and issubclass(AddressError, SockimuxError)


def test_a_long_address_is_shortened_in_the_message() -> None:
    text = "EXEC:" + "x" * 500 + ",bogus"
    with pytest.raises(AddressError) as info:
        parse_address(text)
    message = str(info.value)
    assert len(message) < 250 and message.endswith("unknown option 'bogus' for EXEC (known: count)")


ROLE_CASES = [
    ("UNIX-CONNECT:/s", {Role.SUBFLOW, Role.STREAM}),
    ("TCP:h:1", {Role.SUBFLOW, Role.STREAM}),
    ("EXEC:ls", {Role.SUBFLOW, Role.STREAM}),
    ("STDIO", {Role.STREAM}),
    ("UNIX-LISTEN:/s", {Role.LISTEN}),
    ("TCP-LISTEN:1", {Role.LISTEN}),
]


@pytest.mark.parametrize(("text", "roles"), ROLE_CASES)
def test_roles(text: str, roles: set[Role]) -> None:
    address = parse_address(text)
    for role in Role:
        if role in roles:
            assert parse_address(text, role) == address
        else:
            with pytest.raises(AddressError, match=f"^bad address '{text}': {keyword(address)} cannot "):
                parse_address(text, role)


@pytest.mark.parametrize(("text", "role", "reason"), [
    ("UNIX-LISTEN:/s", Role.SUBFLOW, "UNIX-LISTEN cannot open a subflow (use UNIX-CONNECT, TCP or EXEC)"),
    ("STDIO", Role.LISTEN, "STDIO cannot listen (use UNIX-LISTEN or TCP-LISTEN)"),
    ("TCP-L:7000", Role.STREAM, "TCP-LISTEN cannot be the stream (use STDIO, EXEC, TCP or UNIX-CONNECT)"),
])
def test_role_messages_say_what_would_do(text: str, role: Role, reason: str) -> None:
    with pytest.raises(AddressError) as info:
        parse_address(text, role)
    assert str(info.value) == f"bad address {text!r}: {reason}"


def test_count_is_for_subflows_only() -> None:
    assert parse_address("EXEC:ls,count=2", Role.SUBFLOW) == Exec("ls", 2)
    for text in ("EXEC:ls,count=2", "TCP:h:1,count=2", "UNIX:/s,count=3"):
        with pytest.raises(AddressError, match=r": count= is for subflows \(--connect\) only$"):
            parse_address(text, Role.STREAM)
    check_role(Exec("ls", 1), Role.STREAM)  # count=1 is the default, fine anywhere it is accepted


def test_dataclasses_validate_on_construction_and_are_immutable() -> None:
    with pytest.raises(AddressError, match="port must be 1-65535"):
        TcpConnect("h", 70000)
    with pytest.raises(AddressError, match="empty command"):
        Exec("  ")
    with pytest.raises(AddressError, match="count must be"):
        UnixConnect("/s", count=0)
    with pytest.raises(AddressError, match="mode must be octal"):
        UnixListen("/s", 0o1000)
    with pytest.raises(AddressError, match="bind port"):
        Bind(IPv4Address("1.2.3.4"), 0)
    with pytest.raises(AddressError, match="zone"):
        Bind(IPv6Address("fe80::1%a,b"))
    address = TcpConnect("h", 1)
    with pytest.raises(AttributeError):
        address.port = 2  # type: ignore[misc]
    assert TcpConnect("::0001", 22) == TcpConnect("::1", 22)  # one spelling per IP literal
    assert hash(TcpConnect("::0001", 22)) == hash(TcpConnect("::1", 22))


# -- properties --------------------------------------------------------------------

ENDS = st.sampled_from([(":", ",", "!!"), (",", "=", "!!"), (",", "!!"), (" ",)])
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=40)
# Text rich in the characters the lexer treats specially.
TRICKY = st.text(st.sampled_from(list(":,=!'\"()[]{}\\ \tanx0/.-")), max_size=30)


@given(st.one_of(TEXT, TRICKY), ENDS)
def test_quote_is_read_back_exactly_whatever_ends_the_token(value: str, ends: tuple[str, ...]) -> None:
    lexeme = quote(value)
    assert scan(lexeme + ends[0], 0, ends) == (value, len(lexeme))


@given(st.lists(st.one_of(TEXT, TRICKY), min_size=1, max_size=6))
def test_join_then_split_words_is_the_identity(argv: list[str]) -> None:
    assert split_words(join_words(argv)) == tuple(argv)


@given(st.lists(st.one_of(TEXT, TRICKY), min_size=1, max_size=6), st.integers(1, MAX_COUNT))
def test_exec_from_argv_runs_exactly_that_argv(argv: list[str], count: int) -> None:
    assume(argv[0].strip())
    address = Exec.from_argv(argv, count)
    assert address.argv == tuple(argv)
    assert parse_address(str(address)) == address
    assert parse_address(str(address)).argv == tuple(argv)  # type: ignore[union-attr]


PATHS = st.one_of(TEXT, TRICKY).filter(lambda p: p.strip() == p and p and len(p.encode("utf-8")) <= 107)
LABELS = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12).filter(
    lambda label: label[0] != "-" and label[-1] != "-")
HOSTNAMES = st.lists(LABELS, min_size=1, max_size=4).map(".".join).filter(
    lambda h: not h.replace(".", "").isdigit())
IPS = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6))
PORTS = st.integers(1, 65535)
COUNTS = st.integers(1, MAX_COUNT)
DEVICES = st.text("abcdefghijklmnopqrstuvwxyz0123456789.,'=_-", min_size=1, max_size=15).filter(
    lambda d: d not in (".", ".."))
TIMEOUTS = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)


@st.composite
def tcp_connects(draw: st.DrawFn) -> TcpConnect:
    family = draw(st.sampled_from(Family))
    version = {Family.ANY: draw(st.sampled_from([4, 6])), Family.IPV4: 4, Family.IPV6: 6}[family]
    ips = st.ip_addresses(v=version)
    host = draw(st.one_of(HOSTNAMES, ips.map(str)))
    bind = draw(st.none() | st.builds(Bind, ips, st.none() | PORTS))
    return TcpConnect(host, draw(PORTS), family, bind, draw(st.none() | DEVICES),
                      draw(st.none() | TIMEOUTS), draw(COUNTS))


@st.composite
def tcp_listens(draw: st.DrawFn) -> TcpListen:
    family = draw(st.sampled_from(Family))
    version = {Family.ANY: draw(st.sampled_from([4, 6])), Family.IPV4: 4, Family.IPV6: 6}[family]
    return TcpListen(draw(PORTS), family, draw(st.none() | st.ip_addresses(v=version)))


def _exec_ok(command: str) -> bool:
    try:
        Exec(command)
    except AddressError:
        return False
    return True


ADDRESSES = st.one_of(
    st.just(Stdio()),
    st.builds(UnixConnect, PATHS, COUNTS),
    tcp_connects(),
    st.builds(Exec.from_argv, st.lists(st.one_of(TEXT, TRICKY), min_size=1, max_size=5)
              .filter(lambda a: bool(a[0].strip())), COUNTS),
    st.builds(Exec, st.one_of(TEXT, TRICKY).filter(_exec_ok), COUNTS),
    st.builds(UnixListen, PATHS, st.none() | st.integers(0, 0o777)),
    tcp_listens(),
)


@given(ADDRESSES)
@example(Exec("ssh somehost socat STDIO UNIX-CONNECT:/tmp/sockB", 4))
@example(UnixConnect("/tmp/it's, (odd) [path]: \\ \"x\""))
@example(TcpConnect("fe80::1%eth0", 22, bind=Bind(ip_address("fe80::2"), 1)))
def test_round_trip(address: Address) -> None:
    text = str(address)
    assert parse_address(text) == address
    assert str(parse_address(text)) == text
    assert "\n" not in text and "\r" not in text  # a canonical address is one log line


HEADS = st.sampled_from(["EXEC:", "TCP:", "UNIX:", "TCP-LISTEN:", "UNIX-LISTEN:", "STDIO", "tcp6:", ""])


@given(st.tuples(HEADS, st.one_of(TRICKY, TEXT)).map("".join))
@example("TCP:[::1]:1,bind=[::1]:2")
@example("EXEC:'a\\'b'")
def test_any_text_either_parses_to_a_stable_value_or_raises_address_error(text: str) -> None:
    try:
        address = parse_address(text)
    except AddressError as exc:
        assert str(exc).startswith("bad address ") and "\n" not in str(exc)
        return
    assert parse_address(str(address)) == address
