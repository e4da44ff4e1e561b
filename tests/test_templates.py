"""Industry data templates: one per industry, typed fields, carried in presets and TOML, used by
demo records, and strict mode refusing records that miss or mistype a field (400 naming it)."""
from __future__ import annotations

import dataclasses

import pytest
from aiohttp.test_utils import RawTestServer, TestClient

from resolver import auth, errors, record_input, records
from resolver.auth import Identity
from resolver.identifiers import parse
from resolver.nodes import SecondaryNode
from resolver.store import open_store
from resolver.templates import CATALOGUE, STRICT_TYPE, TYPES, Field, Template, check, from_spec
from resolver.web import NodeAPI
from topology import demo
from topology.model import TopologyError
from topology.presets import _INDUSTRY_TABLE, get_preset
from topology.tomlio import from_toml, to_toml
from topology.validation import validate

NODE = Identity(auth.SECRET_INDEX, "0.NA/88.101")
ENT = Identity(auth.SECRET_INDEX, "0.NA/88.101.1")
GOOD = [{"index": 1, "type": "URL", "data": "https://ex.com/p"},
        {"index": 2, "type": "part_number", "data": "JXDY-023"},
        {"index": 3, "type": "production_line", "data": "L7"},
        {"index": 4, "type": "batch", "data": "JXDY2106"},
        {"index": 5, "type": "manufacture_date", "data": "2021-06-02"},
        {"index": 6, "type": "inspection_report", "data": "https://qa.example.cn/r/1"}]


def test_every_industry_of_the_preset_has_a_valid_typed_template() -> None:
    gz = get_preset("guangzhou-2021")
    codes = [code for code, _, _ in _INDUSTRY_TABLE]
    assert len(codes) == 25 and sorted(CATALOGUE) == sorted(codes)
    assert sorted(t.industry for t in gz.templates) == sorted(codes)
    for template in gz.templates:
        assert template.problems() == [] and template.name
        assert all(f.type in TYPES for f in template.fields)
    kinds = {f.type for t in CATALOGUE.values() for f in t.fields}
    assert kinds == set(TYPES)  # every type is used somewhere
    auto = [(f.name, f.type) for f in CATALOGUE["automotive"].fields]
    assert auto == [("part_number", "string"), ("production_line", "string"),
                    ("batch", "string"), ("manufacture_date", "date"),
                    ("inspection_report", "url")]


def test_templates_round_trip_through_toml_and_bad_ones_are_named() -> None:
    gz = get_preset("guangzhou-2021")
    text = to_toml(gz)
    assert "[templates.automotive.fields]" in text and 'manufacture_date = "date"' in text
    assert from_toml(text).templates == gz.templates
    bad = text.replace('manufacture_date = "date"', 'manufacture_date = "when"', 1)
    with pytest.raises(TopologyError, match="manufacture_date.*unknown type 'when'"):
        from_toml(bad)
    with pytest.raises(ValueError, match="templates.x"):
        from_spec("x", {"name": "X"})
    odd = dataclasses.replace(gz, templates=(Template("nowhere", "N", (Field("a"),)),))
    with pytest.raises(TopologyError, match="template nowhere: no such industry"):
        validate(odd)


def test_demo_records_follow_the_enterprise_template() -> None:
    template = CATALOGUE["automotive"]
    values = record_input.values_from_json(demo.demo_values("88.101.1", 7, template), now=0)
    check(template, values, "88.101.1/SN000000007")  # passes strict mode
    types = [v.type for v in values]
    assert types[:2] == ["URL", "CHECKSUM"] and types[-1] == "HS_ADMIN"
    assert types[2:-1] == [f.name for f in template.fields]
    assert [v["type"] for v in demo.demo_values("88.101.1", 7)] == ["URL", "CHECKSUM", "HS_ADMIN"]


@pytest.mark.parametrize(("change", "field", "why"), [
    (lambda vs: [v for v in vs if v["type"] != "batch"], "batch", "missing"),
    (lambda vs: [v if v["type"] != "manufacture_date" else {**v, "data": "2021-13-02"}
                 for v in vs], "manufacture_date", "a date"),
    (lambda vs: [v if v["type"] != "inspection_report" else {**v, "data": "not a url"}
                 for v in vs], "inspection_report", "URL"),
    (lambda vs: [v if v["type"] != "part_number" else {**v, "data": "  "}
                 for v in vs], "part_number", "non-empty"),
])
def test_check_names_the_missing_or_mistyped_field(change, field, why) -> None:
    values = record_input.values_from_json(change(GOOD), now=0)
    with pytest.raises(errors.HandleError) as info:
        check(CATALOGUE["automotive"], values, "88.101.1/X")
    assert info.value.status == 400 and f"'{field}'" in info.value.message
    assert why in info.value.message


def test_enum_int_email_decimal_types() -> None:
    t = Template("t", "T", (Field("n", "int"), Field("d", "decimal"), Field("e", "email"),
                            Field("g", "enum", ("A", "B")), Field("o", "string", (), False)))
    ok = [records.Value(i, name, text) for i, (name, text) in
          enumerate([("n", "42"), ("d", "3.25"), ("e", "qa@x.cn"), ("g", "B")], 1)]
    check(t, ok, "h")  # the optional field may be absent
    for name, text in [("n", "4.2"), ("d", "x"), ("e", "qa.x.cn"), ("g", "C")]:
        bad = [v if v.type != name else dataclasses.replace(v, value=text) for v in ok]
        with pytest.raises(errors.HandleError, match=f"'{name}'"):
            check(t, bad, "h")


async def strict_node() -> SecondaryNode:
    node = SecondaryNode("gz", open_store("memory:"), ["88.101"])
    await node.bootstrap("node-secret")
    for prefix in ("88.101.1", "88.101.2"):
        await node.create_prefix(prefix, identity=NODE, secret="ent-secret")
    na = parse("0.NA/88.101.1")
    await node.put(na, [records.Value(400, STRICT_TYPE, "automotive")], identity=NODE,
                   indexes={400})
    return node


async def test_strict_prefix_refuses_over_http_with_400_naming_the_field() -> None:
    node = await strict_node()
    client = TestClient(RawTestServer(NodeAPI(node), host="127.0.0.1"))
    await client.start_server()
    try:
        head = {"Authorization": auth.basic_header(str(ENT), "ent-secret")}
        missing = [v for v in GOOD if v["type"] != "manufacture_date"]
        resp = await client.put("/api/handles/88.101.1/JXDY2106023", json={"values": missing},
                                headers=head)
        body = await resp.json()
        assert resp.status == 400 and body["responseCode"] == errors.INVALID_VALUE
        assert "'manufacture_date'" in body["message"]
        assert body["handle"] == "88.101.1/JXDY2106023"
        resp = await client.put("/api/handles/88.101.1/JXDY2106023", json={"values": GOOD},
                                headers=head)
        assert resp.status == 201
        # another prefix of the same node did not opt in: anything goes
        other = {"Authorization": auth.basic_header("300:0.NA/88.101.2", "ent-secret")}
        resp = await client.put("/api/handles/88.101.2/free", json={"values": missing[:1]},
                                headers=other)
        assert resp.status == 201
    finally:
        await client.close()
        await node.close()


async def test_strict_prefix_in_a_batch_refuses_only_the_bad_item() -> None:
    node = await strict_node()
    bad = [v if v["type"] != "inspection_report" else {**v, "data": "ftp:x"} for v in GOOD]
    done = await node.register_many([("88.101.1/A", GOOD), ("88.101.1/B", bad)], identity=ENT)
    assert done[0]["responseCode"] == errors.SUCCESS
    assert done[1]["responseCode"] == errors.INVALID_VALUE
    assert "'inspection_report'" in done[1]["message"]
    assert node.store.get(parse("88.101.1/B").key) is None
    await node.close()
