"""The text of ``sockimux --help``: what it does, examples, addresses, exit codes
(the codes themselves are exits.py's EXIT_* constants)."""

DESCRIPTION = """\
Carry STDIN/STDOUT over many connections ("subflows") to a peer sockimux.
Over ssh in one command: sockimux ssh [-n N] [USER@]HOST [-- COMMAND...]

sockimux listens on the UNIX socket SOCKET.  Every connection made to it is
one subflow; join two sockimux processes by connecting their sockets, e.g.
with socat, once per subflow.  The peer puts the stream back together: no
byte is lost, repeated or reordered while subflows join, die or stall, and
the session waits (as long as it takes, by default) when all are gone.

With --listen and --connect (socat's address syntax, SOCKET then optional)
sockimux listens and opens subflows itself, and re-opens those it opened
when they end; --stream carries a command, a TCP or a UNIX connection
instead of STDIN/STDOUT.  One process may listen and connect at once.
"""

EPILOG = """\
examples:
  one ssh session over 4 ssh connections, one command (the far host needs python3 only):
  ssh -o ProxyCommand='sockimux ssh -n 4 %h' user@host
  tar c dir | sockimux ssh -n 8 host -- tar x -C /dst    # see: sockimux ssh --help

  sockimux /tmp/sockA > /tmp/out.txt &
  echo hello world | sockimux /tmp/sockB &
  socat UNIX-CONNECT:/tmp/sockA UNIX-CONNECT:/tmp/sockB &   # one subflow; repeat for more

  the same by hand, with socat on both hosts (see README):
  ssh -o "ProxyCommand sockimux /tmp/sockA" user@host
  ssh host "socat EXEC:'sockimux /tmp/sockB' TCP:127.0.0.1:22" &
  socat UNIX-CONNECT:/tmp/sockA EXEC:"ssh host socat STDIO UNIX-CONNECT\\:/tmp/sockB" &  # x4

  no socat: one side listens on TCP, the other opens 3 subflows to it:
  sockimux --listen TCP-LISTEN:7000,bind=127.0.0.1 > out &
  sockimux --connect TCP:127.0.0.1:7000,count=3 < in
  one subflow per uplink of a multi-homed host:
  sockimux --connect TCP:far:7000,bind=10.0.1.2 --connect TCP:far:7000,so-bindtodevice=wlan0
  subflows over ssh, re-opened by themselves when an ssh dies:
  sockimux --connect "EXEC:'ssh host socat STDIO UNIX-CONNECT:/tmp/sockB',count=4"
  the far side carries its sshd instead of its STDIO:
  sockimux --listen UNIX-LISTEN:/tmp/sockB --stream TCP:127.0.0.1:22
  sockimux /tmp/sockB --stream "EXEC:'tar x -C /dst'"

addresses (socat's syntax; keywords and options are case-insensitive):
  --connect  UNIX-CONNECT:PATH   TCP:HOST:PORT (TCP4, TCP6; IPv6 as [::1])
             with bind=ADDR[:PORT], so-bindtodevice=IFACE, connect-timeout=SEC
             (default: --handshake-timeout, 10 s; then the next attempt)
             EXEC:'COMMAND' (its STDIN/STDOUT is the subflow; run without a shell)
             each with count=N: N subflows of that address (default 1; counts past
             --max-subflows are cut to fit it, shared among the addresses;
             past one address each, the last addresses get none)
  --listen   UNIX-LISTEN:PATH (mode=0600; safe as SOCKET is), TCP-LISTEN:PORT (bind=ADDR)
  --stream   STDIO (default), EXEC:'COMMAND', TCP:HOST:PORT, UNIX-CONNECT:PATH
  A subflow we opened is re-opened when it ends (exits, fails, stalls),
  after 0.2-0.4 s, doubling up to 30 s while it keeps failing; a refusal
  that cannot heal (another --psk-file, not sockimux, another version)
  stops that address with one error line.  -v logs every attempt.

exit codes:
  0  both streams delivered: ours written out by the peer, the peer's by us
  1  internal error (a bug: please report it)
  2  bad usage (also: a value out of range, a malformed address; STDIN or
     STDOUT a directory or open the wrong way)
  3  the socket cannot be used (exists and is not a socket, in use, a stale one
     that cannot be removed, no permission), a TCP port cannot be listened on,
     the --stream cannot be opened, or no descriptor left to start (an open
     file limit under 24)
  4  our STDOUT was closed (e.g. | head), or a write to it failed (a full
     disk), before the peer's stream ended
  5  the peer ended the session with an error (its STDOUT closed, or it was interrupted)
  6  no subflow for longer than --no-subflow-timeout
  7  reading STDIN failed (a file truncated before all of it was sent, an I/O error)
  8  every --connect address was refused for good (see above) and nothing
     listens (no SOCKET, no --listen): no subflow could ever join; for
     sockimux ssh: the far side cannot be started or reached for good
  9  the --stream EXEC command exited with a non-zero status or a signal
     (logged), the session being otherwise complete; also when the peer's
     --stream EXEC command did (its FIN says so)
  128+N  stopped by signal N (SIGINT 130, SIGTERM 143; SIGHUP 129 if the
         session did not finish within 5 s of it, as when ssh ends a ProxyCommand)
"""
