"""Who may write, on its own: resolver.authority over a dict of records, no store, no node.

The records follow Handle.Net's layout as a secondary node writes them (``prefix_record``):
``0.NA/88.118`` is the node's prefix, ``0.NA/88.118.8`` an enterprise below it.
"""
from __future__ import annotations

import gc
import tracemalloc

import pytest

from resolver import auth, errors, identifiers, records
from resolver.auth import Identity
from resolver.authority import ADMIN_GROUP_INDEX, Authority, prefix_record
from resolver.records import Value

NODE_SECRET = "node-admin-secret"
ENT8_SECRET = "ent8-secret"
NODE = Identity(300, "0.NA/88.118")
ENT8 = Identity(300, "0.NA/88.118.8")
ENT9 = Identity(300, "0.NA/88.118.9")
ALICE = Identity(300, "88.118.8/alice")  # a member of 88.118.8's admin group
BOB = Identity(300, "88.118.9/bob")


class Records(dict):
    """Handle text -> values, read as a store reads: ASCII case folded; counts reads."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def put(self, text: str, values: list[Value]) -> None:
        self[identifiers.make_key(text)] = values

    def read(self, text: str) -> list[Value] | None:
        self.reads += 1
        return self.get(identifiers.make_key(text))


def world() -> Records:
    db = Records()
    for prefix, secret in [("88.118", NODE_SECRET), ("88.118.8", ENT8_SECRET),
                           ("88.118.9", "ent9-secret"), ("88.1180", "other-secret")]:
        db.put(f"0.NA/{prefix}", prefix_record(f"0.NA/{prefix}", secret, now=0, token=True))
    # alice joins 88.118.8's admin group (HS_VLIST 200 of 0.NA/88.118.8)
    na8 = db[identifiers.make_key("0.NA/88.118.8")]
    db.put("0.NA/88.118.8", [v if v.type != "HS_VLIST" else
                             Value(v.index, v.type, v.value + [{"index": 300,
                                                                "handle": "88.118.8/alice"}],
                                   v.format)
                             for v in na8])
    db.put("88.118.8/alice", [Value(300, "HS_SECKEY", auth.hash_secret("alice", token=True))])
    return db


@pytest.fixture
def db() -> Records:
    return world()


@pytest.fixture
def rules(db: Records) -> Authority:
    return Authority(db.read)


def parse(text: str) -> identifiers.Handle:
    return identifiers.parse(text)


def refused(call, *args) -> errors.HandleError:
    with pytest.raises(errors.HandleError) as info:
        call(*args)
    return info.value


# ------------------------------------------------------------------ identities

def test_identity_logs_in_with_the_secret_at_its_hs_seckey(rules):
    assert rules.authenticate(ENT8, ENT8_SECRET) == ENT8
    assert rules.authenticate(ALICE, "alice") == ALICE


@pytest.mark.parametrize("identity,secret", [
    (ENT8, "wrong"),                              # wrong secret
    (Identity(301, "0.NA/88.118.8"), ENT8_SECRET),  # nothing at that index
    (Identity(200, "0.NA/88.118.8"), ENT8_SECRET),  # an HS_VLIST is not a secret
    (Identity(300, "0.NA/88.118.77"), "x"),         # no such handle
])
def test_login_refused_is_403(rules, identity, secret):
    err = refused(rules.authenticate, identity, secret)
    assert (err.code, err.status) == (errors.AUTHENTICATION_FAILED, 401)


# ------------------------------------------------------------------ administration

def test_owner_administers_its_prefix_through_the_admin_group(rules):
    """HS_ADMIN of 0.NA/88.118.8 names group 200, whose HS_VLIST lists 300:0.NA/88.118.8."""
    assert rules.administers(ENT8, "88.118.8")


def test_group_member_named_in_hs_vlist_administers(rules):
    assert rules.administers(ALICE, "88.118.8")
    assert rules.administers(ALICE, "88.118.8.5")
    assert not rules.administers(ALICE, "88.118.9")


def test_admin_of_a_parent_prefix_administers_every_prefix_below(rules):
    assert rules.administers(NODE, "88.118")
    assert rules.administers(NODE, "88.118.8")
    assert rules.administers(NODE, "88.118.8.1.2")
    assert rules.administers(NODE, "88.118.77")  # below, even with no 0.NA record of its own


def test_prefix_admin_rules_nothing_beside_or_above_it(rules):
    assert not rules.administers(NODE, "88.1180")   # a sibling sharing the digits
    assert not rules.administers(NODE, "88.11")
    assert not rules.administers(NODE, "88")
    assert not rules.administers(ENT8, "88.118")    # the parent
    assert not rules.administers(ENT8, "88.118.9")  # a sibling enterprise
    assert not rules.administers(Identity(300, "0.NA/88.1180"), "88.118.8")


def test_prefixes_and_identities_compare_without_ascii_case(db):
    db.put("0.NA/88.118.ab", prefix_record("0.NA/88.118.ab", "s", now=0, token=True))
    rules = Authority(db.read)
    assert rules.administers(Identity(300, "0.na/88.118.AB"), "88.118.Ab")


def test_admin_entry_naming_an_identity_directly(db):
    """HS_ADMIN may name an identity (its HS_SECKEY) instead of a group."""
    db.put("0.NA/88.118.7", [records.admin_value("88.118.9/bob", 300)])
    assert Authority(db.read).administers(BOB, "88.118.7")


def test_malformed_hs_vlist_entries_are_ignored_without_error(db):
    members = ["junk", 7, None, {}, {"index": "300", "handle": "88.118.9/bob"},
               {"index": 300, "handle": 9}, {"handle": "88.118.9/bob"}]
    db.put("0.NA/88.118.7", [records.admin_value("0.NA/88.118.7", ADMIN_GROUP_INDEX),
                             Value(ADMIN_GROUP_INDEX, "HS_VLIST", members, "vlist")])
    db.put("0.NA/88.118.6", [records.admin_value("0.NA/88.118.6", ADMIN_GROUP_INDEX),
                             Value(ADMIN_GROUP_INDEX, "HS_VLIST", members
                                   + [{"index": 300, "handle": "88.118.9/BOB"}], "vlist")])
    db.put("0.NA/88.118.5", [records.admin_value("0.NA/88.118.5", ADMIN_GROUP_INDEX),
                             Value(ADMIN_GROUP_INDEX, "HS_VLIST", "not a list", "string")])
    rules = Authority(db.read)
    assert not rules.administers(BOB, "88.118.7")
    assert rules.administers(BOB, "88.118.6")  # a good entry after the bad ones still counts
    assert not rules.administers(BOB, "88.118.5")


def test_a_group_is_the_hs_vlist_at_the_named_index_only(db):
    db.put("0.NA/88.118.7", [records.admin_value("0.NA/88.118.7", ADMIN_GROUP_INDEX),
                             Value(201, "HS_VLIST", [{"index": 300, "handle": "88.118.9/bob"}],
                                   "vlist")])
    assert not Authority(db.read).administers(BOB, "88.118.7")


# ------------------------------------------------------------------ writes

def test_anonymous_write_is_402(rules):
    err = refused(rules.check_may_write, None, parse("88.118.8/x"), None)
    assert (err.code, err.status, err.handle) == (errors.AUTHENTICATION_NEEDED, 401, "88.118.8/x")


def test_write_by_the_wrong_identity_is_400(rules):
    err = refused(rules.check_may_write, BOB, parse("88.118.8/x"), None)
    assert (err.code, err.status) == (errors.INSUFFICIENT_PERMISSIONS, 403)
    assert err.handle == "88.118.8/x"


def test_prefix_admins_may_write_handles_under_it(rules):
    for who in (ENT8, ALICE, NODE):
        assert rules.check_may_write(who, parse("88.118.8/x"), None) is None


def test_a_handles_own_hs_admin_grants_write_to_that_handle(rules):
    current = [Value(1, "URL", "https://a.example"), records.admin_value("88.118.9/bob", 300)]
    assert rules.check_may_write(BOB, parse("88.118.8/x"), current) is None
    # ...not creation (there is no record yet), and not other handles of the prefix
    assert refused(rules.check_may_write, BOB, parse("88.118.8/x"), None).code == 400
    assert refused(rules.check_may_write, BOB, parse("88.118.8/y"),
                   [Value(1, "URL", "u")]).code == 400


def test_a_handles_own_hs_admin_may_name_a_group(db, rules):
    db.put("88.118.9/team", [Value(200, "HS_VLIST", [{"index": 300, "handle": "88.118.9/bob"}],
                                   "vlist")])
    current = [records.admin_value("88.118.9/team", 200)]
    assert rules.check_may_write(BOB, parse("88.118.8/x"), current) is None


def test_creating_a_prefix_handle_needs_admin_of_the_parent(rules):
    new = parse("0.NA/88.118.10")
    assert rules.check_may_write(NODE, new, None) is None
    for who in (ENT8, ALICE, Identity(300, "0.NA/88.118.10")):
        assert refused(rules.check_may_write, who, new, None).code == 400


def test_changing_a_prefix_handle_needs_admin_of_that_prefix(rules, db):
    na8 = parse("0.NA/88.118.8")
    current = db.read("0.NA/88.118.8")
    for who in (ENT8, ALICE, NODE):
        assert rules.check_may_write(who, na8, current) is None
    assert refused(rules.check_may_write, ENT9, na8, current).code == 400


def test_nobody_creates_a_one_segment_prefix_here(rules):
    for who in (NODE, Identity(300, "0.NA/88")):
        assert refused(rules.check_may_write, who, parse("0.NA/89"), None).code == 400


# ------------------------------------------------------------------ admin-only values

def rows(text: str, values: list[Value]) -> list[list]:
    return records.decode_rows(records.encode(text, values))[1]


def test_hidden_values_are_for_admins_only(rules, db):
    na8 = rows("0.NA/88.118.8", db.read("0.NA/88.118.8"))
    for who in (ENT8, ALICE, NODE):
        assert rules.may_read_hidden(who, parse("0.NA/88.118.8"), na8)
    for who in (ENT9, BOB, Identity(300, "0.NA/88.1180")):
        assert not rules.may_read_hidden(who, parse("0.NA/88.118.8"), na8)


def test_hidden_values_of_a_handle_for_the_admins_it_names(rules):
    own = rows("88.118.8/x", [Value(1, "URL", "u"), records.admin_value("88.118.9/bob", 300)])
    assert rules.may_read_hidden(BOB, parse("88.118.8/x"), own)
    assert rules.may_read_hidden(ENT8, parse("88.118.8/x"), own)
    assert not rules.may_read_hidden(ENT9, parse("88.118.8/x"), own)


# ------------------------------------------------------------------ memos

def test_decisions_are_memoised_until_a_consulted_record_is_written(db):
    rules = Authority(db.read)
    assert rules.administers(ALICE, "88.118.8.5")
    reads = db.reads
    for _ in range(3):  # what the register path asks per identifier: no read after the first
        rules.check_may_write(ALICE, parse("88.118.8.5/x"), None)
        rules.authenticate(ENT8, ENT8_SECRET)  # its HS_SECKEY is in 0.NA/88.118.8, consulted
    assert db.reads == reads
    # alice leaves the group: the writer calls forget with the key it wrote
    db.put("0.NA/88.118.8", prefix_record("0.NA/88.118.8", ENT8_SECRET, now=0, token=True))
    assert rules.administers(ALICE, "88.118.8.5")  # stale until told
    assert rules.forget([identifiers.make_key("0.NA/88.118.8")]) is True
    assert not rules.administers(ALICE, "88.118.8.5")
    assert rules.forget([identifiers.make_key("88.118.8/unrelated")]) is False


def test_every_memo_is_bounded(db):
    """Login attempts with ever new secrets used to grow the decision memo without limit."""
    rules = Authority(db.read, max_entries=10)
    for i in range(100):
        refused(rules.authenticate, ENT8, f"guess-{i}")
        rules.administers(ENT8, f"88.118.8.{i}")
        assert max(rules.held()) <= 10
    assert rules.authenticate(ENT8, ENT8_SECRET) == ENT8


def test_no_memo_at_all_still_decides(db):
    rules = Authority(db.read, max_entries=0)
    assert rules.administers(ALICE, "88.118.8")
    assert not rules.administers(BOB, "88.118.8")
    assert rules.authenticate(ENT8, ENT8_SECRET) == ENT8
    assert rules.held() == (0, 0)


def test_distinct_wrong_secrets_leave_no_memory(db):
    """100,000 failed logins, each with a new 1 KB secret (issue 8's reproduction): nothing is
    remembered, and traced memory stays flat (bound: 64 KiB at its peak; it was ~20 MB, one
    decision each, until the memo was cleared wholesale at 100,000)."""
    rules = Authority(db.read)  # the default bound, 100,000 entries
    assert rules.authenticate(ENT8, ENT8_SECRET) == ENT8
    held = rules.held()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(100_000):
            try:
                rules.authenticate(ENT8, f"{i:08d}" * 128)
            except errors.HandleError as exc:
                assert exc.code == errors.AUTHENTICATION_FAILED
            else:
                raise AssertionError("a wrong secret was accepted")
        grown = tracemalloc.get_traced_memory()[1] - before  # the peak, not just the end
    finally:
        tracemalloc.stop()
    print(f"100,000 distinct 1 KB wrong secrets: traced memory peaked {grown} B above the start")
    assert rules.held() == held
    assert grown < 64 * 1024, grown
    assert rules.authenticate(ENT8, ENT8_SECRET) == ENT8


def test_failed_logins_do_not_push_good_decisions_out(db):
    rules = Authority(db.read, max_entries=4)
    assert rules.authenticate(ENT8, ENT8_SECRET) == ENT8
    assert rules.administers(ALICE, "88.118.8")
    reads = db.reads
    for i in range(50):  # wrong secrets, and identities that do not exist
        refused(rules.authenticate, ENT8, f"guess-{i}")
        refused(rules.authenticate, Identity(300, f"0.NA/88.118.{i + 100}"), "x")
    assert db.reads == reads + 50  # each unknown identity read afresh (not kept)...
    assert rules.authenticate(ENT8, ENT8_SECRET) == ENT8  # ...and the good ones still known
    assert rules.administers(ALICE, "88.118.8")
    assert db.reads == reads + 50


def test_memos_are_lru_not_cleared_wholesale(db):
    rules = Authority(db.read, max_entries=3)
    assert rules.authenticate(ENT8, ENT8_SECRET) == ENT8
    for i in range(10):  # other decisions, drawn from records consulted already
        rules.authenticate(ENT8, ENT8_SECRET)  # recently used: kept
        assert rules.administers(ENT8, f"88.118.8.{i}")
        assert max(rules.held()) <= 3
    reads = db.reads
    assert rules.authenticate(ENT8, ENT8_SECRET) == ENT8
    assert db.reads == reads
