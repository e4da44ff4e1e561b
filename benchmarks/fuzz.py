"""A time-bounded fuzz run of a live idsim network: hostile HTTP and msgpack-RPC input.

    python benchmarks/fuzz.py --seconds 120 [--seed 1] [--workers 16]

It starts the ``mini`` network (top-level node, three secondary nodes, recursive node) as
host processes on free loopback ports, then, for the given time, sends seeded random input:
- HTTP: every endpoint with random methods, handles (unicode, huge, percent-garbage), query
  values (huge, negative, non-numeric integers), Basic credentials (well-formed with wrong
  secrets, garbage), bodies (Handle values with random fields and out-of-range integers, deep
  nesting, invalid JSON, random bytes) and raw malformed request lines and headers;
- RPC: random bytes, msgpack-rpc calls of every method with random arguments (sent without
  authenticating), huge length headers and deep nesting, to every RPC port.

It reports the HTTP statuses seen, every 500 (a bug) with its request, requests with no
answer within the timeout (a hang), what the RPC ports did (answered, closed, silent), the
host processes' anonymous memory before and after, and whether every node still resolves a
known identifier at the end. Exit status 1 if there was a 500, a hang, or a node stopped
answering. Loopback only; bounded in time and connections.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
import msgpack  # noqa: E402
from yarl import URL  # noqa: E402

from benchmarks import procs  # noqa: E402
from benchmarks.network import Network, free_preset  # noqa: E402
from resolver.net import split_address  # noqa: E402

TIMEOUT = 5.0  # s an answer may take before the request counts as a hang
RPC_METHODS = ["resolve", "stats", "delegate", "register_prefixes", "report", "hello", "auth"]
PATHS = ["/api/handles/{h}", "/api/handles", "/api/handles/", "/api/batch/register",
         "/api/batch/resolve", "/api/admin/prefixes", "/api/prefixes", "/api/stats", "/{h}",
         "/metrics", "/healthz", "/readyz", "/api/openapi.json", "/dashboard", "/api/x"]
METHODS = ["GET", "GET", "GET", "PUT", "PUT", "DELETE", "POST", "POST", "HEAD", "PATCH",
           "OPTIONS", "FOO"]
INTS = [0, -1, 1, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64, 10**20, -(2**63), "1e9",
        "99999999999999999999", "abc", "", None, 1.5, True]


class Fuzz:
    def __init__(self, rng: random.Random, prefixes: list[str]):
        self.rng = rng
        self.prefixes = prefixes

    def pick(self, seq):
        return seq[self.rng.randrange(len(seq))]

    def text(self, n: int = 12) -> str:
        alphabet = "aZ09./-_%:?#\\\x00\u2028é中\U0001F600 '\"<>"
        return "".join(self.pick(alphabet) for _ in range(self.rng.randrange(n + 1)))

    def handle(self) -> str:
        r = self.rng.random()
        p = self.pick(self.prefixes)
        if r < 0.4:
            return f"{p}/SN{self.rng.randrange(20):09d}"
        if r < 0.55:
            return f"0.NA/{p}"
        if r < 0.7:
            return f"{p}/{self.text()}"
        if r < 0.8:
            return "88." + "9" * self.rng.randrange(1, 400) + "/x"
        if r < 0.9:
            return self.text(30)
        return p

    def value(self):
        r = self.rng.random()
        v = {"index": self.pick(INTS), "type": self.pick(["URL", "EMAIL", "HS_ADMIN", "HS_VLIST",
                                                        "HS_SECKEY", "URL\x00", "", 7]),
             "data": {"format": self.pick(["string", "vlist", "admin", "base64", "hex", "x"]),
                      "value": self.pick(["https://e.x/1", self.text(), 5, None, [], {}])}}
        if r < 0.2:
            v["data"]["value"] = [{"handle": f"0.NA/{self.pick(self.prefixes)}",
                                   "index": self.pick(INTS)}]
        if r > 0.8:
            v["ttl"] = self.pick(INTS)
            v["timestamp"] = self.pick(INTS)
        if self.rng.random() < 0.1:
            del v[self.pick(list(v))]
        return v

    def body(self) -> bytes | None:
        r = self.rng.random()
        if r < 0.15:
            return None
        if r < 0.45:
            return json.dumps({"values": [self.value() for _ in range(self.rng.randrange(4))]}
                              ).encode()
        if r < 0.6:
            return json.dumps({"handles": [{"handle": self.handle(), "values": [self.value()]}
                                           for _ in range(self.rng.randrange(5))],
                               "overwrite": self.pick([True, False, "x"])}).encode()
        if r < 0.7:
            return json.dumps({"prefix": self.handle(), "secret": self.pick([None, "x", 5,
                                                                         "long-secret-1"])}
                              ).encode()
        if r < 0.8:
            depth = self.rng.randrange(1, 5000)
            return b"[" * depth + b"]" * depth
        if r < 0.9:
            return bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(200)))
        return b'{"values": [' + b"{" * 50

    def headers(self) -> dict:
        h = {}
        r = self.rng.random()
        if r < 0.4:
            user = f"300:0.NA/{self.pick(self.prefixes)}"
            token = base64.b64encode(f"{user}:{self.text(40)}".encode()).decode()
            h["Authorization"] = f"Basic {token}"
        elif r < 0.5:
            h["Authorization"] = self.pick(["Basic", "Basic ###", "Bearer x", "Basic " + "A" * 9000,
                                            "Handle sessionId=x"])
        if self.rng.random() < 0.2:
            h["Accept"] = "application/msgpack"
        if self.rng.random() < 0.5:
            h["Content-Type"] = self.pick(["application/json", "text/plain", "x/y;charset=zz"])
        return h

    def request(self) -> tuple[str, str, dict, bytes | None]:
        path = self.pick(PATHS).replace("{h}", self.quote(self.handle()))
        params = []
        for _ in range(self.rng.randrange(4)):
            key = self.pick(["type", "index", "pretty", "auth", "prefix", "page", "pageSize",
                             "overwrite", self.text(5)])
            params.append(f"{self.quote(key)}={self.quote(str(self.pick(INTS + [self.text()])))}")
        if params:
            path += "?" + "&".join(params)
        return self.pick(METHODS), path, self.headers(), self.body()

    def quote(self, s: str) -> str:
        from urllib.parse import quote
        return quote(s, safe="/:.") if self.rng.random() < 0.9 else s.replace(" ", "%20")

    def raw(self) -> bytes:
        """A malformed HTTP/1.1 request: what a client library would never send."""
        return self.pick([
            b"GET /api/handles/" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 500 + b"\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40),
            b"PUT /api/handles/88.118.8/x HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
            b"PUT /api/handles/88.118.8/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"GET /api/handles/%ff%fe HTTP/1.1\r\nHost: \x00\r\n\r\n",
            b"BREW /coffee HTCPCP/1.0\r\n\r\n",
            bytes(self.rng.randrange(256) for _ in range(300)) + b"\r\n\r\n",
        ])

    def rpc_message(self) -> bytes:
        r = self.rng.random()
        if r < 0.5:
            args = [self.pick([self.handle(), self.pick(INTS), {"identifiers": 10**12},
                               [self.handle()] * 3, {"a": {"b": [1] * 10}}, b"\x00" * 10])
                    for _ in range(self.rng.randrange(4))]
            args = [a if not isinstance(a, int) or -(2**63) <= a < 2**64 else str(a) for a in args]
            return msgpack.packb([self.pick([0, 2, 1, 9]), self.rng.randrange(2**32),
                                  self.pick(RPC_METHODS), args][: self.rng.randrange(2, 5)])
        if r < 0.65:
            return b"\xc6\xff\xff\xff\xff" + bytes(100)  # bin32 claiming 4 GiB
        if r < 0.8:
            depth = self.rng.randrange(1, 3000)
            return b"\x91" * depth + b"\xc0"
        return bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(1, 500)))


async def http_worker(fz: Fuzz, urls: list[str], stop: float, out: dict) -> None:
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while time.monotonic() < stop:
            base = fz.pick(urls)
            if fz.rng.random() < 0.03:
                await raw_request(base, fz.raw(), out)
                continue
            method, path, headers, body = fz.request()
            try:
                async with session.request(method, URL(base + path, encoded=True),
                                           headers=headers, data=body) as resp:
                    await resp.read()
                    out["status"][resp.status] += 1
                    if resp.status == 500 or resp.status > 503:
                        out["errors"].append(f"{resp.status} {method} {base}{path} "
                                             f"{(body or b'')[:200]!r}")
            except asyncio.TimeoutError:
                out["hangs"].append(f"{method} {base}{path}")
            except (aiohttp.ClientError, ValueError, UnicodeError) as exc:
                out["client_side"][type(exc).__name__] += 1


async def raw_request(base: str, data: bytes, out: dict) -> None:
    host, port = split_address(base.split("//", 1)[1])
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), TIMEOUT)
    except (OSError, asyncio.TimeoutError):
        out["client_side"]["connect"] += 1
        return
    try:
        writer.write(data)
        line = await asyncio.wait_for(reader.readline(), TIMEOUT)
        status = line.split(b" ")[1].decode() if line.startswith(b"HTTP/") else "closed"
        out["raw"][status] += 1
        if status.startswith("5") and status != "503":
            out["errors"].append(f"raw {status}: {data[:80]!r}")
    except asyncio.TimeoutError:
        out["hangs"].append(f"raw {data[:60]!r}")
    except OSError:
        out["raw"]["reset"] += 1
    finally:
        writer.close()


async def rpc_worker(fz: Fuzz, addrs: list[str], stop: float, out: dict) -> None:
    while time.monotonic() < stop:
        host, port = split_address(fz.pick(addrs))
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), TIMEOUT)
        except (OSError, asyncio.TimeoutError):
            out["rpc"]["connect-failed"] += 1
            continue
        try:
            for _ in range(fz.rng.randrange(1, 5)):
                writer.write(fz.rpc_message())
            await writer.drain()
            data = await asyncio.wait_for(reader.read(65536), 2.0)
            out["rpc"]["answered" if data else "closed"] += 1
        except asyncio.TimeoutError:
            out["rpc"]["silent-2s"] += 1  # waiting for more input, or ignoring us
        except OSError:
            out["rpc"]["reset"] += 1
        finally:
            writer.close()


async def still_answers(net: Network) -> dict[str, int | str]:
    """Every node's answer to a known identifier (or its own 0.NA record) after the run."""
    out = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as s:
        for name in ["recursive", "top", *[n.code for n in net.topo.secondaries]]:
            ent = next(e.prefix for e in net.topo.enterprises
                       if name in ("recursive", "top") or e.node == name)
            path = f"0.NA/{ent}" if name == "top" else f"{ent}/SN000000000"
            try:
                async with s.get(f"{net.http(name)}/api/handles/{path}") as r:
                    out[name] = r.status
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                out[name] = type(exc).__name__
    return out


async def run(args, net: Network) -> dict:
    prefixes = net.prefixes()
    urls = [net.http(n) for n in ["recursive", "top", *[s.code for s in net.topo.secondaries]]]
    addrs = [net.topo.recursive.rpc_addr, net.topo.top.rpc_addr,
             *[s.address.rpc_addr for s in net.topo.secondaries]]
    out = {"status": Counter(), "raw": Counter(), "rpc": Counter(), "client_side": Counter(),
           "errors": [], "hangs": []}
    stop = time.monotonic() + args.seconds
    rng = random.Random(args.seed)
    workers = [http_worker(Fuzz(random.Random(rng.random()), prefixes), urls, stop, out)
               for _ in range(args.workers)]
    workers += [rpc_worker(Fuzz(random.Random(rng.random()), prefixes), addrs, stop, out)
                for _ in range(max(1, args.workers // 4))]
    await asyncio.gather(*workers)
    out["after"] = await still_answers(net)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=120.0, help="how long to fuzz")
    ap.add_argument("--seed", type=int, default=1, help="RNG seed (same seed, same input)")
    ap.add_argument("--workers", type=int, default=16, help="concurrent HTTP clients")
    args = ap.parse_args()
    procs.install_handlers()
    with tempfile.TemporaryDirectory(prefix="idsim-fuzz-") as tmp:
        net = Network(free_preset("mini", identifiers_per_enterprise=20), Path(tmp))
        try:
            net.start("core", ["top", *[s.code for s in net.topo.secondaries]])
            net.start("edge", ["recursive"])
            before = net.rss_anon_kib()
            t0 = time.monotonic()
            out = asyncio.run(run(args, net))
            elapsed = time.monotonic() - t0
            after = net.rss_anon_kib()
            problems = net.log_problems(5)
        finally:
            net.stop()
    http_total = sum(out["status"].values())
    print(f"fuzzed {elapsed:.0f} s, seed {args.seed}: {http_total:,} HTTP requests "
          f"({http_total / elapsed:,.0f}/s), {sum(out['raw'].values()):,} raw malformed, "
          f"{sum(out['rpc'].values()):,} RPC connections")
    print("  HTTP statuses:", dict(sorted(out["status"].items())))
    print("  raw requests:", dict(out["raw"]))
    print("  RPC connections:", dict(out["rpc"]))
    print("  refused client-side (not sent):", dict(out["client_side"]))
    print("  RssAnon KiB before → after:", {k: f"{before[k]} → {after[k]}" for k in before})
    print("  after the run, each node's answer to a known identifier:", out["after"])
    print(f"  server errors (500/5xx): {len(out['errors'])}   hangs (> {TIMEOUT:.0f} s): "
          f"{len(out['hangs'])}")
    for line in (out["errors"] + out["hangs"])[:10]:
        print("    ", line[:300])
    if problems:
        print("  log lines that look like trouble:", json.dumps(problems, indent=1)[:3000])
    ok = not out["errors"] and not out["hangs"] and all(
        v == 200 for v in out["after"].values())
    print("RESULT:", "ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
