"""Every tunable default of a node, in one place, and where each effective value came from.

A ``Config`` is frozen data in sections (``SECTIONS``: ``cache``, ``rpc``, ``http``, ``batch``,
``store``, ``host``, ``observe``, ``auth``, ``metrics``, ``wan``, ``faults``, ``replication``,
``answers``, and the load generator's ``openmodel``, ``capacity``, ``day`` from
``resolver.config_load``). The defaults below are the only defaults:
constructors take their values from a ``Config`` and keep none of their own. Values are
layered, later layers winning:

    defaults  <  the topology file's sections  <  idsim.toml (--config)  <  --set / flags

``layered`` builds the effective config from such layers and records, for each key, which
layer set it (``Config.sources``); ``idsim config show`` prints both. A layer is a mapping
``{section: {key: value}}`` as TOML gives it; unknown sections or keys and values of the
wrong type are reported all at once in one ``ConfigError``. Pure: no file or socket here
(``read_toml`` and ``write_toml`` are the helpers that touch a file).
"""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from resolver.config_load import CapacityConfig, DayConfig, OpenModelConfig  # noqa: F401

MiB = 2**20


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """The recursive node's caches (``resolver.cache.TTLCache``) and TTL rules; the TTL the
    top-level node gives delegations; the bound on a secondary node's memos."""
    answer_entries: int = 1_000_000       # 0 turns the answer cache off
    answer_bytes: int = 512 * MiB
    answer_stale: float = 86400.0         # s an expired answer may serve (RFC 8767 max-stale)
    delegation_entries: int = 100_000
    delegation_stale: float = 86400.0     # s an expired delegation may serve while top is down
    delegation_ttl: float = 3600.0        # when the top-level node gives none
    prefix_record_ttl: int = 86400        # 0.NA/<prefix> records, served by the top-level node
    negative_ttl: float = 5.0             # how long "not found" is remembered
    min_ttl: int = 0                      # clamp of a record's smallest value TTL
    max_ttl: int = 86400
    site_ttl: int = 3600                  # TTL of the HS_SITE values the top-level node writes
    memo_entries: int = 100_000           # each memo of a secondary node (records and decisions
                                          # consulted to decide who may write; homed prefixes)
    # RFC 8767 serve-stale, RFC 2308, prefetch, failover (resolution, peer_health; README)
    negative_stale: float = 60.0          # s an expired "not found" may serve while upstream fails
    max_negative_ttl: float = 3600.0      # cap of any negative TTL (RFC 2308 section 5)
    stale_answer_ttl: int = 30            # TTL of every value of an answer served stale
    stale_deadline: float = 1.8           # s a client waits for upstream before stale is served
    prefetch_window: float = 0.1          # last fraction of a TTL where a hit prefetches; 0: off
    peer_failures: int = 2                # consecutive failed calls that put a peer in back-off
    peer_backoff: float = 1.0             # s of the first back-off window; doubles per failure
    peer_backoff_max: float = 60.0        # s, the longest back-off window


@dataclass(frozen=True, slots=True)
class RpcConfig:
    """Node-to-node msgpack-RPC (``resolver.rpc``)."""
    timeout: float = 2.0                  # s for an answer to a call
    connect_timeout: float = 1.0
    retry_after: float = 0.5              # s a failed connect makes later calls fail at once
    max_message: int = 4 * MiB            # largest message a server accepts (the largest
                                          # real one, 717 prefixes registered at start: 8 KB)
    close_timeout: float = 1.0            # s close() lets unsent bytes drain before aborting
    # limits and authentication of node-to-node RPC (resolver.rpc_auth; see the README)
    max_answer: int = 16 * MiB            # largest answer a client accepts (a record may be
                                          # as large as an HTTP body, http.max_body)
    handshake_timeout: float = 5.0        # s for a new connection to prove which node it is
    message_timeout: float = 10.0         # s to complete a message once it has begun to arrive
    idle_timeout: float = 300.0           # s without a byte or a call before a server closes
    max_connections: int = 1024           # open connections per server; beyond: the oldest
                                          # unauthenticated one is closed, else the new one
    log_burst: int = 10                   # warning lines per log_window, then one summary
    log_window: float = 60.0              # s
    max_report_fields: int = 64           # fields in one statistics report
    max_report_text: int = 256            # characters of a text field in a report
    max_recursive_reports: int = 64       # recursive processes the top-level node keeps
    max_unproven: int = 64 * 1024         # bytes a connection may send before it has proved
                                          # which node it is (a hello is ~100 B)


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """The Handle REST API (``resolver.web``, ``resolver.server``)."""
    max_body: int = 16 * MiB              # a batch of 10,000 registrations fits
    body_timeout: float = 30.0            # s to receive a whole request body
    keepalive: float = 75.0
    max_line: int = 8190                  # request line and each header line
    max_field: int = 8190
    max_headers: int = 64
    forward_timeout: float = 30.0         # s for a write a recursive node passes on
    page_size: int = 100                  # GET /api/handles?prefix=: handles per page if not given
    max_page_size: int = 10_000           # larger ?pageSize= values are cut to this
    max_page: int = 1_000_000             # larger ?page= values are cut to this
    plain_auth_remote: int = 0            # 1: Basic credentials count over plain HTTP from
                                          # non-loopback peers too (Handle.Net: HTTPS only)
    # sizes of what a client stores (larger: 413, responseCode 202)
    max_value_data: int = 64 * 1024       # bytes of one value's data, as stored (msgpack)
    max_record: int = MiB                 # bytes of one whole record, as stored
    # the access log (idsim up/node --access-log; resolver.access_log): off unless asked for
    access_sample: float = 1.0            # share of requests written (0.01: one in a hundred)
    access_max_bytes: int = 64 * MiB      # a file is rotated when it would pass this size
    access_backups: int = 5               # rotated files kept (….jsonl.1 … .5; 0: never rotated)
    fast_path: int = 1                    # 1: the hot GET answered below aiohttp (resolver.fast_http)


@dataclass(frozen=True, slots=True)
class BatchConfig:
    max_register: int = 10_000            # identifiers in one POST /api/batch/register
    max_resolve: int = 1_000              # identifiers in one POST /api/batch/resolve


@dataclass(frozen=True, slots=True)
class StoreConfig:
    lmdb_map_size_gib: float = 64.0       # address space reserved per LMDB store (not disk)
    # redis-cluster:// stores
    redis_connections: int = 64           # commands in flight per store (redis-py's async
                                          # cluster pool fails, not queues, past its size)
    import_transaction: int = 250_000     # identifiers per transaction of `idsim import`
    commit_gather: float = 0.001          # s an LMDB commit may wait for the writes in flight


@dataclass(frozen=True, slots=True)
class HostConfig:
    """A host process: the nodes it runs and how they reach the top-level node."""
    report_every: float = 1.0             # s between statistics reports to the top-level node
    register_deadline: float = 60.0       # s to keep retrying prefix registration at start
    top_timeout: float = 10.0             # s for a call to the top-level node (registering
                                          # thousands of prefixes at start is one call)
    # the launcher's supervision of host processes (topology.supervisor)
    ready_timeout: float = 600.0          # s for a host process to seed and say ready
    stop_timeout: float = 15.0            # s from SIGTERM to SIGKILL
    restart_delay: float = 0.5            # s before the first restart; doubles on each one
    restart_max_delay: float = 10.0       # ... up to this
    restart_reset_after: float = 30.0     # s up after which the delay is back to restart_delay
    # each serving process's garbage collector, once its nodes are built and seeded (gc_settings)
    gc_freeze: int = 1                    # 1: start-up objects leave the collector's sight
    gc_threshold0: int = 50_000           # allocations between young collections (Python: 700)
    gc_threshold1: int = 20               # young collections per middle one (Python: 10)
    gc_threshold2: int = 100              # middle collections per full one (Python: 10)


@dataclass(frozen=True, slots=True)
class ObserveConfig:
    """The operator's view: /readyz, ``idsim status`` and the dashboard."""
    peer_check_ttl: float = 2.0           # s a /readyz peer check's result is reused
    peer_timeout: float = 2.0             # s for one /readyz peer check
    scrape_timeout: float = 3.0           # s for one node's /readyz or /metrics when observed
    status_interval: float = 1.0          # s between the scrapes rates come from (status, --watch)
    dashboard_cache: float = 1.0          # s a /dashboard/data answer is reused by every browser
    dashboard_poll: float = 2.0           # s between the dashboard page's polls
    ready_poll: float = 0.2               # s between idsim up's polls of the nodes' /readyz
    registration_recheck: float = 60.0    # s between a secondary's checks that the top-level
                                          # node holds its prefixes (and on each top restart)


# the failed-login limits (resolver.ratelimit), on the HTTP API
@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Failed Basic-auth logins (``resolver.ratelimit.LoginLimits``): over a limit, 429."""
    address_failures: int = 50            # failed logins one client address may make per window
    identity_failures: int = 10           # ... for one identity from one address (0: no limits)
    window: float = 60.0                  # s over which failures are counted
    lockout: float = 60.0                 # s a client (or identity at it) over a limit waits
    tracked: int = 10_000                 # clients and identities remembered (LRU)
    known_for: float = 3600.0             # s a login that succeeded from an address keeps that
                                          # identity exempt from the address's lockout there


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Prometheus metrics at ``GET /metrics`` (``resolver.metrics``)."""
    enabled: int = 1                      # 0: no request instrumentation and no /metrics
    share_every: float = 1.0              # s between the counter snapshots that processes
                                          # serving one port (SO_REUSEPORT) exchange
    max_upstream_series: int = 1000       # (peer, method) pairs counted; beyond, peer "other"
    scrape_interval: float = 5.0          # s, in the prometheus.yml that idsim up writes


# the WAN model (resolver.wan, applied by resolver.link; idsim up --wan china): issue 10
@dataclass(frozen=True, slots=True)
class WanConfig:
    """Delays between nodes in different places (``resolver.wan``): off unless enabled."""
    enabled: int = 0                      # 1: node-to-node RPC and forwarded writes are delayed
    seed: int = 1                         # the same seed gives the same delays on every link
    route_factor: float = 2.0             # path length / great-circle distance (an assumption)
    fibre_km_per_ms: float = 200.0        # speed of light in fibre (c / 1.5)
    base_ms: float = 1.0                  # one-way ms every link between two cities adds
    intra_city_ms: float = 0.5            # one-way ms between two nodes in one city
    jitter_median_ms: float = 0.5         # lognormal jitter added to each message: median ...
    jitter_p99_ms: float = 5.0            # ... and 99th percentile (>= the median)
    loss: float = 0.0                     # probability a transmission is lost (costs an RTO)
    rto_ms: float = 200.0                 # first retransmission timeout (TCP's minimum), doubles
    max_retries: int = 6                  # retransmissions before the message is lost for good
    bandwidth_mbps: float = 0.0           # serialisation delay bytes*8/bandwidth (0: none)
    matrix: str = ""                      # TOML file of [matrix.CityA] CityB = ms one-way base
                                          # delays, replacing propagation for those pairs


@dataclass(frozen=True, slots=True)
class FaultsConfig:
    """Faults set while the network runs (``resolver.faults``, ``topology.control``)."""
    control_port: int = 0                 # each host's control API port on 127.0.0.1 (0: any
                                          # free one, recorded in <data>/control/<pid>.json)
    control_timeout: float = 5.0          # s for one request of idsim fault to a control API
    seed: int = 0                         # seed of the RNG choosing which requests fail (errors)
    restart_wait: float = 60.0            # s idsim fault restart waits for the host to be back


@dataclass(frozen=True, slots=True)
class ReplicationConfig:
    """Mirrors following a primary's transaction log (``resolver.replication``, ``mirror``)."""
    log_entries: int = 200_000            # changes the log keeps (older: a mirror re-dumps)
    log_age: float = 86400.0              # s a change stays in the log at most
    poll_wait: float = 5.0                # s a log read waits for a change (long-poll)
    poll_check: float = 0.05              # s between checks of the log while waiting
    page_bytes: int = 1 * MiB             # bytes of records in one dump page or log answer
    retry: float = 0.5                    # s a mirror waits after a failed call to its primary


# a secondary node's rendered answers (resolver.answer_cache), per serving process
@dataclass(frozen=True, slots=True)
class AnswersConfig:
    """Hot answers a secondary (or top-level) node keeps rendered, checked against the store
    on every hit (``resolver.answer_cache``)."""
    entries: int = 100_000                # 0 turns the rendered-answer cache off
    max_bytes: int = 64 * MiB             # rendered bytes kept (plus ~360 B per entry)


SECTIONS: dict[str, type] = {"cache": CacheConfig, "rpc": RpcConfig, "http": HttpConfig,
                             "batch": BatchConfig, "store": StoreConfig, "host": HostConfig,
                             "observe": ObserveConfig, "auth": AuthConfig,
                             "metrics": MetricsConfig, "wan": WanConfig,
                             "faults": FaultsConfig,
                             "openmodel": OpenModelConfig, "capacity": CapacityConfig,
                             "day": DayConfig, "replication": ReplicationConfig,
                             "answers": AnswersConfig}  # resolver.answer_cache
DEFAULT_SOURCE = "default"


class ConfigError(ValueError):
    """A config layer is malformed; ``problems`` names every bad section, key or value."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{source}: invalid config ({len(problems)} problem"
                         f"{'s' if len(problems) != 1 else ''}):\n"
                         + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True, slots=True)
class Config:
    cache: CacheConfig = field(default_factory=CacheConfig)
    rpc: RpcConfig = field(default_factory=RpcConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    host: HostConfig = field(default_factory=HostConfig)
    observe: ObserveConfig = field(default_factory=ObserveConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    wan: WanConfig = field(default_factory=WanConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)
    openmodel: OpenModelConfig = field(default_factory=OpenModelConfig)
    capacity: CapacityConfig = field(default_factory=CapacityConfig)
    day: DayConfig = field(default_factory=DayConfig)
    replication: ReplicationConfig = field(default_factory=ReplicationConfig)
    answers: AnswersConfig = field(default_factory=AnswersConfig)  # resolver.answer_cache
    # "section.key" -> the layer that set it; keys absent here are defaults
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def source(self, dotted: str) -> str:
        return self.sources.get(dotted, DEFAULT_SOURCE)

    def rows(self) -> list[tuple[str, Any, str]]:
        """Every key as ``(section.key, value, source)``, in declaration order."""
        out = []
        for name in SECTIONS:
            section = getattr(self, name)
            for f in dataclasses.fields(section):
                dotted = f"{name}.{f.name}"
                out.append((dotted, getattr(section, f.name), self.source(dotted)))
        return out

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """The effective values as TOML-ready sections (what ``--config`` reads back)."""
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    def with_values(self, source: str, values: Mapping[str, Mapping[str, Any]]) -> "Config":
        """A copy with one more layer on top (see ``layered``)."""
        return layered([(source, values)], base=self)


def _check(section: str, key: str, kind: type, value: Any) -> tuple[Any, str | None]:
    """The value converted to the field's type, or a problem."""
    if kind is str:  # a text key (wan.matrix, a file name)
        return (value, None) if isinstance(value, str) else (
            None, f"{section}.{key} must be text, got {type(value).__name__} {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, (f"{section}.{key} must be a number, got {type(value).__name__} "
                      f"{value!r}")
    if kind is int and isinstance(value, float):
        if not value.is_integer():
            return None, f"{section}.{key} must be a whole number, got {value!r}"
        value = int(value)
    if value < 0:
        return None, f"{section}.{key} must be >= 0, got {value!r}"
    return kind(value), None


def layered(layers: Iterable[tuple[str, Mapping[str, Any]]], *, base: Config | None = None
            ) -> Config:
    """Apply ``(source, {section: {key: value}})`` layers in order over ``base`` (defaults).

    Raises ConfigError naming the source and every unknown section, unknown key and
    ill-typed value of the first bad layer.
    """
    config = base or Config()
    sections = {name: dataclasses.asdict(getattr(config, name)) for name in SECTIONS}
    sources = dict(config.sources)
    for source, layer in layers:
        problems: list[str] = []
        for name, values in layer.items():
            cls = SECTIONS.get(name)
            if cls is None:
                problems.append(f"unknown section [{name}] (known: {', '.join(SECTIONS)})")
                continue
            if not isinstance(values, Mapping):
                problems.append(f"[{name}] must be a table of key = value")
                continue
            kinds = {f.name: f.type for f in dataclasses.fields(cls)}
            for key, value in values.items():
                if key not in kinds:
                    problems.append(f"unknown key {name}.{key} (known: {', '.join(kinds)})")
                    continue
                kind = (int if kinds[key] in (int, "int") else
                        str if kinds[key] in (str, "str") else float)
                converted, problem = _check(name, key, kind, value)
                if problem:
                    problems.append(problem)
                    continue
                sections[name][key] = converted
                sources[f"{name}.{key}"] = source
        if problems:
            raise ConfigError(source, problems)
    return Config(**{name: SECTIONS[name](**sections[name]) for name in SECTIONS},
                  sources=sources)


def parse_set(items: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``["cache.answer_entries=0", "rpc.timeout=1.5"]`` -> a layer. ValueError if malformed."""
    layer: dict[str, dict[str, Any]] = {}
    for item in items:
        dotted, eq, raw = item.partition("=")
        section, dot, key = dotted.strip().partition(".")
        if not eq or not dot or not section or not key:
            raise ValueError(f"--set expects section.key=value, like cache.answer_entries=0; "
                             f"got {item!r}")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            raise ValueError(f"--set {dotted}: {raw!r} is not a number") from None
        layer.setdefault(section, {})[key] = value
    return layer


def config_sections(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The config sections of a parsed TOML document (a topology file may hold them too)."""
    return {k: v for k, v in doc.items() if k in SECTIONS}


def write_toml(config: Config, path: str | Path) -> None:
    """The effective values as a config file (what host processes read), atomically."""
    import tomli_w
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    chosen = [f"#   {key} = {value!r}  (from {source})" for key, value, source in config.rows()
              if source != DEFAULT_SOURCE]
    head = ["# effective idsim config, written by idsim up; see: idsim config show",
            "# not defaults:" if chosen else "# every value is the default", *chosen]
    tmp.write_text("\n".join(head) + "\n" + tomli_w.dumps(config.as_dict()), encoding="utf-8")
    tmp.replace(path)


def read_toml(path: str | Path) -> dict[str, Any]:
    """A config file's layer: its sections, checked later by ``layered``."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"not valid TOML: {exc}"]) from None
