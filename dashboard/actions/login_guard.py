"""Guessing passwords: who a client is, how fast it may guess, and how its refusals are audited.

- Client key (`client_key`): the address Streamlit saw (st.context.ip_address). X-Forwarded-For is read only
  when that peer is a configured trusted proxy (PERFDECK_TRUSTED_PROXIES), because any client can send the
  header. Streamlit reports loopback peers as None: those clients (a browser on this machine, or a proxy
  on it that is not trusted) each get a key of their own browser session, never one key they all share.
  IPv6 addresses count per /64, the block one subscriber usually holds. (Measured: on a dual-stack
  listener Streamlit reports a local browser as "::ffff:127.0.0.1", not None; that is loopback too.)
- Backoff (`LoginGuard`): a key's failures make it wait 1, 2, 4, 8 s before its next try, then lock it for
  15 minutes. A refused try computes no hash and counts nothing. The guard never locks everyone: past 20
  failures in 15 minutes across all keys, each verification takes a turn one second after the previous
  one (first come, first served), which caps guessing at one per second without refusing anyone; the
  operator's right password, from a key of its own, still gets through after the turns queued before it.
- Audit (`RefusalAudit`): one row per client and minute with the count of refused attempts, written when
  the first one happens and updated when that minute is over, so a flood costs a few writes, not one each.
"""
from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


# -- who is the client -------------------------------------------------------------------------------

def parse_trusted_proxies(raw: str | Iterable[str] | None) -> tuple[tuple[Network, ...], tuple[str, ...]]:
    """(networks, problems) from "10.0.0.1, 192.168.0.0/16" or a list of such entries."""
    items = raw.split(",") if isinstance(raw, str) else list(raw or [])
    networks, problems = [], []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            problems.append(f"PERFDECK_TRUSTED_PROXIES: {item!r} is not an address or CIDR; ignored.")
    if any(n.network_address.is_loopback for n in networks):   # "127.0.0.1" means this machine, either family
        networks += [n for n in (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
                     if n not in networks]
    return tuple(networks), tuple(problems)


def _address(text: str | None):
    """An address, IPv4-mapped IPv6 (how a dual-stack server sees IPv4 peers) as the IPv4 it is."""
    try:
        addr = ipaddress.ip_address(str(text).strip().strip("[]"))
    except ValueError:
        return None
    return addr.ipv4_mapped if addr.version == 6 and addr.ipv4_mapped is not None else addr


def _trusted(addr, proxies: Sequence[Network]) -> bool:
    return addr is not None and any(addr.version == n.version and addr in n for n in proxies)


def _uvicorn_trusted(value: str | None) -> tuple[Network, ...] | None:
    """The peers whose X-Forwarded-For uvicorn (Streamlit's server) itself believes: $FORWARDED_ALLOW_IPS,
    by default loopback. None: every peer ("*")."""
    value = "127.0.0.1,::1" if value is None else value
    if "*" in value:
        return None
    return parse_trusted_proxies(value)[0]


def _uvicorn_client(forwarded_for: str, trusted: tuple[Network, ...] | None) -> str:
    """The address uvicorn puts in place of a trusted peer's own (its ProxyHeadersMiddleware's rule)."""
    hops = [h.strip() for h in forwarded_for.split(",")]
    if trusted is not None:
        for hop in reversed(hops):
            if not _trusted(_address(hop), trusted):
                return hop
    return hops[0]


def client_key(ip_address: str | None, forwarded_for: str | None, session_id: str,
               trusted_proxies: Sequence[Network] = (), uvicorn_allow: str | None = None) -> str:
    """The key failures are counted under. `ip_address` is st.context.ip_address (None for a loopback
    peer), `forwarded_for` the X-Forwarded-For header, `session_id` this browser session's own id,
    `uvicorn_allow` the server process's $FORWARDED_ALLOW_IPS.

    Streamlit's server (uvicorn) already replaces the address of a loopback peer by what its
    X-Forwarded-For says, so st.context.ip_address can be the header's word. When it matches the header,
    the peer is taken to be one uvicorn trusts (loopback by default), and the header is believed only if
    that peer is in `trusted_proxies`; else the client gets its session's key. A remote client that writes
    its own address in the header gains nothing but a key per session."""
    uvicorn = _uvicorn_trusted(uvicorn_allow)
    client = _address(ip_address) if ip_address else ipaddress.ip_address("127.0.0.1")
    peers = None if client is None else (ipaddress.ip_network(client),)
    if forwarded_for and uvicorn != () and (ip_address is None
                                            or ip_address == _uvicorn_client(forwarded_for, uvicorn)):
        client, peers = None, uvicorn     # possibly rewritten: the real peer is one uvicorn trusts
    peer_trusted = peers is not None and bool(trusted_proxies) and all(
        any(p.version == n.version and p.subnet_of(n) for n in trusted_proxies) for p in peers)
    if forwarded_for and peer_trusted:
        # The rightmost hop not ours is the client; anything left of it the client wrote itself.
        for hop in reversed(forwarded_for.split(",")):
            addr = _address(hop)
            if addr is None:
                break           # a garbled hop: trust nothing further left, keep the last good one
            client = addr
            if not _trusted(addr, trusted_proxies):
                break
    if client is None or client.is_loopback:
        return f"session:{session_id}"
    if client.version == 6:
        return f"ip:{ipaddress.ip_network(f'{client}/64', strict=False)}"
    return f"ip:{client}"


# -- backoff -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LoginResult:
    ok: bool
    message: str
    locked_until: float | None = None   # time.time() seconds, when the key may try again
    matched: int | None = field(default=None, compare=False)   # which of the hashes matched


def _minutes(seconds: float) -> int:
    return max(1, math.ceil(seconds / 60))


def _wait_text(seconds: float) -> str:
    return f"{math.ceil(seconds)} s" if seconds < 60 else f"{_minutes(seconds)} min"


@dataclass
class _Key:
    failures: list[float] = field(default_factory=list)
    next_try: float = 0.0


class LoginGuard:
    """Failed-login bookkeeping shared by every session of the server process. `clock` and `sleep` are
    injectable so tests drive time without waiting."""

    def __init__(self, *, per_key: int = 5, window_s: float = 900, lock_s: float = 900, first_delay_s: float = 1.0,
                 overall: int = 20, global_delay_s: float = 1.0, clock=time.time, sleep=time.sleep):
        self.per_key, self.window_s, self.lock_s, self.first_delay_s = per_key, window_s, lock_s, first_delay_s
        self.overall, self.global_delay_s = overall, global_delay_s
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._keys: dict[str, _Key] = {}
        self._all_failures: list[float] = []
        self._next_turn = 0.0

    def _forget(self, now: float) -> None:
        # Only failures inside the window count; dropping the rest keeps memory bounded under key rotation.
        since = now - self.window_s
        for key in list(self._keys):
            entry = self._keys[key]
            entry.failures = [t for t in entry.failures if t > since]
            if not entry.failures and entry.next_try <= now:
                del self._keys[key]
        self._all_failures = [t for t in self._all_failures if t > since]

    def _refusal(self, key: str, now: float) -> LoginResult | None:
        entry = self._keys.get(key)
        if entry is None or entry.next_try <= now:
            return None
        text = "too many failed attempts" if len(entry.failures) >= self.per_key else "wait before trying again"
        return LoginResult(False, f"{text}; try again in {_wait_text(entry.next_try - now)}", entry.next_try)

    def waiting(self, key: str, now: float | None = None) -> LoginResult | None:
        """The refusal for `key` if it must wait (backoff or lock), else None."""
        with self._lock:
            now = self._clock() if now is None else now
            self._forget(now)
            return self._refusal(key, now)

    def attempt(self, key: str, password: str, encoded: str | Sequence[str], now: float | None = None) -> LoginResult:
        """Check `password` against `encoded` (one hash, or several: `matched` says which) for client `key`.
        `now` given (tests) stands for the clock; after a turn's wait it is the turn's time."""
        from dashboard.actions.access import verify_password  # access imports this module

        key = key or "unknown"
        hashes = [encoded] if isinstance(encoded, str) else list(encoded)
        explicit = now is not None
        with self._lock:
            now = now if explicit else self._clock()
            self._forget(now)
            refused = self._refusal(key, now)
            if refused is not None:
                return refused            # no hash computed, nothing counted
            turn = now
            if len(self._all_failures) >= self.overall:
                # Under a flood, verifications take turns a second apart: slower, never refused.
                turn = max(now, self._next_turn)
                self._next_turn = turn + self.global_delay_s
        if turn > now:
            self._sleep(turn - now)
            now = turn if explicit else self._clock()
        # Verifying under the lock serialises attempts, so parallel guesses of one key cannot slip past the count.
        with self._lock:
            refused = self._refusal(key, now)
            if refused is not None:
                return refused
            matched = next((i for i, h in enumerate(hashes) if verify_password(password, h)), None)
            if matched is not None:
                self._keys.pop(key, None)
                return LoginResult(True, "logged in", matched=matched)
            entry = self._keys.setdefault(key, _Key())
            entry.failures.append(now)
            self._all_failures.append(now)
            count = len(entry.failures)
            if count >= self.per_key:
                entry.next_try = now + self.lock_s
                return LoginResult(False, f"wrong password; too many failed attempts; try again in "
                                   f"{_minutes(self.lock_s)} min", entry.next_try)
            delay = self.first_delay_s * 2 ** (count - 1)
            entry.next_try = now + delay
            left = self.per_key - count
            return LoginResult(False, f"wrong password ({left} attempt{'s' if left != 1 else ''} left; "
                               f"next in {_wait_text(delay)})", entry.next_try)


# -- audit of refusals -------------------------------------------------------------------------------

@dataclass
class _Minute:
    row: object | None
    count: int
    written: int
    message: str


OTHERS = "other clients"


class RefusalAudit:
    """Refused logins as audit rows, at most one per action, client key and minute (and at most `max_keys`
    clients a minute; past that, one row for "other clients"). `insert(action, client, message) -> row`
    writes the row of a minute's first refusal at once; `update(row, count, message)` writes the final
    count once that minute is over (on the next call to refused() or flush()). Both are short store writes."""

    def __init__(self, insert: Callable[[str, str, str], object], update: Callable[[object, int, str], None], *,
                 max_keys: int = 20, clock=time.time):
        self._insert, self._update, self.max_keys, self._clock = insert, update, max_keys, clock
        self._lock = threading.Lock()
        self._minutes: dict[tuple[int, str, str], _Minute] = {}

    def refused(self, action: str, client: str, message: str, now: float | None = None) -> None:
        now = self._clock() if now is None else now
        minute = int(now // 60)
        self.flush(now)
        with self._lock:
            key = (minute, action, client)
            if key not in self._minutes and sum(k[0] == minute for k in self._minutes) >= self.max_keys:
                key = (minute, action, OTHERS)
            entry = self._minutes.get(key)
            if entry is not None:
                entry.count += 1
                entry.message = message
                return
            entry = self._minutes[key] = _Minute(None, 1, 1, message)
        try:
            entry.row = self._insert(action, key[2], message)
        except Exception:   # a busy store must not stop a login; this minute's count is then lost
            entry.row = None

    def flush(self, now: float | None = None) -> None:
        """Write the final counts of minutes that are over; cheap when there is nothing to write."""
        now = self._clock() if now is None else now
        minute = int(now // 60)
        with self._lock:
            done = [(k, e) for k, e in self._minutes.items() if k[0] < minute]
            for k, _ in done:
                del self._minutes[k]
        for _, entry in done:
            if entry.row is not None and entry.count != entry.written:
                try:
                    self._update(entry.row, entry.count, entry.message)
                except Exception:
                    pass


__all__ = ["LoginGuard", "LoginResult", "RefusalAudit", "client_key", "parse_trusted_proxies"]
