"""Locust users of an idsim cluster. Plain users with weights, no TaskSets.

- ``Resolver``: clients resolving through the recursive node (``--host``), identifiers drawn
  by ``workload.Workload`` (Zipf-like popularity, a share of unknown identifiers that must
  answer 404 / responseCode 100).
- ``Registrant``: an enterprise registering single identifiers (PUT, 201) and batches at the
  node that serves its prefix, with its own login from the cluster's ``logins.json``.
- ``Operator``: one user reading the top-level node's statistics.

What the cluster holds (prefixes, identifiers per enterprise, the top-level URL, logins) is
read from its data directory (``--idsim-data``, default ``idsim-data``). Imports nothing asyncio:
Locust runs on gevent.
"""
from __future__ import annotations

import base64
import json
import random
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

from locust import FastHttpUser, constant, events, task

from loadtest.workload import Workload


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    g = parser.add_argument_group("idsim")
    g.add_argument("--idsim-data", default="idsim-data", help="the cluster's data directory")
    g.add_argument("--zipf-s", type=float, default=1.1, help="Zipf exponent of popularity")
    g.add_argument("--unknown-share", type=float, default=0.05,
                   help="share of resolves for identifiers that do not exist")
    g.add_argument("--batch-size", type=int, default=100, help="identifiers per batch registration")
    g.add_argument("--idsim-seed", type=int, default=None,
                   help="seed of the users' draws (run records replay it); default: unseeded")
    # the web UI serves this machine only unless told otherwise (--web-host, LOCUST_WEB_HOST)
    parser.set_defaults(web_host="127.0.0.1")


@lru_cache(maxsize=None)
def cluster(data_dir: str) -> dict:
    data = Path(data_dir)
    state_path = data / "cluster.json"
    if not state_path.exists():
        raise RuntimeError(f"no running cluster described in {state_path}: start one with idsim up")
    state = json.loads(state_path.read_text())
    state["loginsData"] = json.loads(Path(state["logins"]).read_text())
    return state


def options(user) -> object:
    return user.environment.parsed_options


_started: dict[str, int] = {}  # users started so far in this process, by class


def user_rng(user) -> random.Random:
    """The random source of one user: with ``--idsim-seed``, seeded by the seed, the user's
    class, its start order in this process and the Locust worker's index, so a replayed run
    draws the same identifiers per user (how many it sends depends on timing); else unseeded."""
    seed = options(user).idsim_seed
    if seed is None:
        return random.Random()
    name = type(user).__name__
    _started[name] = n = _started.get(name, 0) + 1
    worker = getattr(user.environment.runner, "worker_index", 0)
    return random.Random(f"{seed}:{name}:{n}:{worker}")


class Resolver(FastHttpUser):
    weight = 20
    wait_time = constant(0)

    def on_start(self) -> None:
        opts = options(self)
        state = cluster(opts.idsim_data)
        self.workload = Workload(state["prefixes"], state["perEnterprise"], s=opts.zipf_s,
                                 unknown_share=opts.unknown_share, rng=user_rng(self))

    @task
    def resolve(self) -> None:
        handle, known = self.workload.sample()
        want = 200 if known else 404
        with self.client.get(f"/api/handles/{handle}", name="resolve" if known else "resolve unknown",
                             catch_response=True) as resp:
            if resp.status_code == want:
                resp.success()  # a 404 for an unknown identifier is the right answer
            else:
                resp.failure(f"{handle}: HTTP {resp.status_code}, wanted {want}")


class Registrant(FastHttpUser):
    weight = 1
    wait_time = constant(0)

    def on_start(self) -> None:
        opts = options(self)
        logins = cluster(opts.idsim_data)["loginsData"]["enterprises"]
        login = logins[user_rng(self).choice(sorted(logins))]
        self.prefix = login["prefix"]
        self.node = login["httpUrl"]
        token = base64.b64encode(f"{quote(login['username'])}:{login['secret']}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
        self.batch_size = opts.batch_size
        # unseeded even in a replay: its suffixes must be new ones
        self.workload = Workload([self.prefix], 1, rng=random.Random())

    def _values(self, sfx: str) -> list[dict]:
        return [{"index": 1, "type": "URL",
                 "data": {"format": "string", "value": f"https://ex.com/{self.prefix}/{sfx}"}}]

    @task(4)
    def register_one(self) -> None:
        sfx = self.workload.new_suffixes("LT", 1)[0]
        with self.client.put(f"{self.node}/api/handles/{self.prefix}/{sfx}?overwrite=false",
                             data=json.dumps({"values": self._values(sfx)}), headers=self.headers,
                             name="register", catch_response=True) as resp:
            if resp.status_code != 201:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")

    @task(1)
    def register_batch(self) -> None:
        items = [{"handle": f"{self.prefix}/{s}", "values": self._values(s)}
                 for s in self.workload.new_suffixes("LTB", self.batch_size)]
        with self.client.post(f"{self.node}/api/batch/register", data=json.dumps({"handles": items}),
                              headers=self.headers, name=f"register batch of {self.batch_size}",
                              catch_response=True) as resp:
            if resp.status_code != 200 or resp.json().get("failed"):
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")


class Operator(FastHttpUser):
    fixed_count = 1
    wait_time = constant(1)

    def on_start(self) -> None:
        self.top = cluster(options(self).idsim_data)["topUrl"]

    @task
    def stats(self) -> None:
        with self.client.get(f"{self.top}/api/stats", name="stats", catch_response=True) as resp:
            if resp.status_code != 200 or resp.json().get("totals", {}).get("secondaryNodes", 0) < 1:
                resp.failure(f"HTTP {resp.status_code}")
