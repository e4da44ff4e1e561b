"""Who is on the other end of a node-to-node RPC connection, and what it may call. No I/O.

Every node has its own random key (``new_key``), issued by ``idsim up`` and kept in the
cluster's ``logins.json`` (``"rpc": {node name: hex key}``), which every host process reads.
A connection proves which node it is before any call is dispatched, in one round trip:

1. the server sends ``[2, "idsim.challenge", [VERSION, server name, server nonce]]`` as soon
   as the connection is made;
2. the client answers ``[2, "idsim.hello", [client name, client nonce, client proof]]``,
   the proof being HMAC-SHA256(client key, "client" + both nonces + both names);
3. the server checks the proof against its table of node keys (``hmac.compare_digest``) and
   answers ``[2, "idsim.welcome", [server proof]]`` (HMAC-SHA256(server key, "server" + both
   nonces + both names)), which the client checks in turn (mutual), or ``[2, "idsim.refused",
   [code, message, null]]`` and closes.

Nonces come from the ``nonces`` source given (``os.urandom`` by default), so tests can fix
them. Both nonces and both names are in each proof: a proof is good for one connection to one
server only, and a server's proof cannot be replayed as a client's (the role word differs).

What this protects: a process that can connect to the RPC ports but cannot read the data
directory (``logins.json`` is mode 0600) can neither read through RPC nor change any state.
It authenticates the connection, not each message: against someone able to rewrite traffic
on the path, TLS is the tool (the cluster CA). Every host process reads every key, so the keys
tell nodes apart (a secondary may report only its own statistics) but do not defend one host
process against another.

``Method(fn, roles)`` is what a node's ``rpc_handlers()`` maps each method name to: the
server calls ``fn(caller, *params)`` only if ``caller.role`` is in ``roles`` and the number of
params fits ``fn``'s signature (``arity``, computed once).
"""
from __future__ import annotations

import hashlib
import hmac
import inspect
import os
import secrets
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from resolver.errors import AUTHENTICATION_FAILED, INVALID_VALUE, HandleError
from resolver.roles import Role

__all__ = ["VERSION", "CHALLENGE", "HELLO", "WELCOME", "REFUSED", "Caller", "Method", "Keyring",
           "Trust", "new_key", "role_of", "mirror_name", "primary_of", "MIRROR_MARK", "client_proof", "server_proof", "refused", "text_param"]

VERSION = 1
CHALLENGE, HELLO, WELCOME, REFUSED = "idsim.challenge", "idsim.hello", "idsim.welcome", \
    "idsim.refused"
NONCE_BYTES = 16
MAX_NAME = 64  # a node name: "top", "recursive" or a secondary node's code


MIRROR_MARK = "~"  # "<primary>~<city>": a mirror's node name


def mirror_name(primary: str, city: str) -> str:
    """The node name of ``primary``'s mirror in ``city`` (``88.118~Beijing``, ``top~Beijing``)."""
    return f"{primary}{MIRROR_MARK}{city}"


def primary_of(name: str) -> str:
    """The primary a mirror's name follows (``88.118~Beijing`` -> ``88.118``); else the name."""
    return name.split(MIRROR_MARK, 1)[0]


def new_key() -> str:
    """A fresh node key, as hex text (what logins.json holds)."""
    return secrets.token_hex(32)


def role_of(name: str) -> Role:
    """The role a node name stands for: ``top``, ``recursive`` or ``recursive-<city>`` (one of
    several recursive nodes, issue 10), ``<primary>~<city>`` (a mirror of that primary: a
    secondary node's code or ``top``), else a secondary node's code."""
    if MIRROR_MARK in name:
        return Role.MIRROR
    if name == Role.TOP.value:
        return Role.TOP
    if name == Role.RECURSIVE.value or name.startswith(Role.RECURSIVE.value + "-"):
        return Role.RECURSIVE
    return Role.SECONDARY


@dataclass(frozen=True, slots=True)
class Caller:
    """The node a connection proved to be."""
    name: str
    role: Role


@dataclass(frozen=True, slots=True)
class Method:
    """An RPC method: ``fn(caller, *params)``, callable by the nodes whose role is in ``roles``."""
    fn: Callable[..., Any]
    roles: frozenset = field(default=frozenset())
    arity: tuple[int, float] = field(default=(0, 0), compare=False)

    def __init__(self, fn: Callable[..., Any], roles: Iterable[Role]) -> None:
        object.__setattr__(self, "fn", fn)
        object.__setattr__(self, "roles", frozenset(Role(r) for r in roles))
        object.__setattr__(self, "arity", _arity(fn))

    def admits(self, caller: Caller) -> bool:
        return caller.role in self.roles


def _arity(fn: Callable[..., Any]) -> tuple[int, float]:
    """How many params (after ``caller``) ``fn`` takes: (least, most)."""
    params = list(inspect.signature(fn).parameters.values())[1:]
    least = sum(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                for p in params)
    most = float("inf") if any(p.kind == p.VAR_POSITIONAL for p in params) else sum(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
    return least, most


class Keyring:
    """Node name -> key. Built from logins.json's ``rpc`` section (``from_logins``)."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        self._keys = dict(keys)

    @classmethod
    def from_logins(cls, logins: Mapping[str, Any]) -> "Keyring":
        section = logins.get("rpc")
        if not isinstance(section, Mapping) or not section:
            raise ValueError("logins hold no RPC keys (an 'rpc' section): run idsim up, which "
                             "adds them to the data directory's logins.json")
        return cls({name: bytes.fromhex(key) for name, key in section.items()})

    def key(self, name: Any) -> bytes | None:
        return self._keys.get(name) if isinstance(name, str) else None

    def __contains__(self, name: object) -> bool:
        return name in self._keys


@dataclass(frozen=True, slots=True)
class Trust:
    """One end's part in the handshake: its own node name, the keys it knows, a nonce source."""
    name: str
    keyring: Keyring
    nonces: Callable[[int], bytes] = os.urandom

    def nonce(self) -> bytes:
        return self.nonces(NONCE_BYTES)

    # ---------------------------------------------------------------- server side
    def challenge(self, nonce: bytes) -> list:
        return [VERSION, self.name, nonce]

    def admit(self, nonce: bytes, hello: Any) -> tuple[Caller, list]:
        """The caller a hello proves, and the welcome params; HandleError 403 otherwise."""
        if not (type(hello) is list and len(hello) == 3):
            raise refused("hello must be [name, nonce, proof]")
        name, client_nonce, proof = hello
        key = self.keyring.key(name)
        if key is None or len(name) > MAX_NAME:
            raise refused("unknown node")
        if type(client_nonce) is not bytes or len(client_nonce) != NONCE_BYTES \
                or type(proof) is not bytes:
            raise refused("malformed hello")
        want = client_proof(key, nonce, client_nonce, name, self.name)
        if not hmac.compare_digest(want, proof):
            raise refused("wrong proof")
        own = self.keyring.key(self.name) or b""
        return (Caller(name, role_of(name)),
                [server_proof(own, nonce, client_nonce, name, self.name)])

    # ---------------------------------------------------------------- client side
    def hello(self, challenge: Any, nonce: bytes) -> tuple[str, list]:
        """(server name, hello params) for a challenge; HandleError 403 if it is not one."""
        if not (type(challenge) is list and len(challenge) == 3 and challenge[0] == VERSION
                and type(challenge[1]) is str and type(challenge[2]) is bytes):
            raise refused("malformed challenge")
        _, server, server_nonce = challenge
        key = self.keyring.key(self.name)
        if key is None:
            raise refused(f"no RPC key for this node ({self.name})")
        return server, [self.name, nonce,
                        client_proof(key, server_nonce, nonce, self.name, server)]

    def check_welcome(self, server: str, server_nonce: bytes, nonce: bytes,
                      welcome: Any) -> None:
        """Raise HandleError 403 unless the welcome proves ``server`` holds its key."""
        key = self.keyring.key(server)
        ok = (key is not None and type(welcome) is list and len(welcome) == 1
              and type(welcome[0]) is bytes
              and hmac.compare_digest(server_proof(key, server_nonce, nonce, self.name, server),
                                      welcome[0]))
        if not ok:
            raise refused(f"the server did not prove it is node {server}")


def _mac(key: bytes, *parts: bytes | str) -> bytes:
    msg = b"\x00".join(p.encode() if isinstance(p, str) else p for p in parts)
    return hmac.new(key, msg, hashlib.sha256).digest()


def client_proof(key: bytes, server_nonce: bytes, client_nonce: bytes, client: str,
                 server: str) -> bytes:
    return _mac(key, b"idsim-rpc-client", server_nonce, client_nonce, client, server)


def server_proof(key: bytes, server_nonce: bytes, client_nonce: bytes, client: str,
                 server: str) -> bytes:
    return _mac(key, b"idsim-rpc-server", server_nonce, client_nonce, client, server)


def refused(why: str) -> HandleError:
    return HandleError(AUTHENTICATION_FAILED, f"rpc authentication failed: {why}")


def text_param(value: Any, what: str, most: int = 1024) -> str:
    """An RPC param that must be short text (HandleError 202 otherwise, never a TypeError)."""
    if type(value) is not str or len(value) > most:
        raise HandleError(INVALID_VALUE, f"{what} must be a string of at most {most} characters")
    return value
