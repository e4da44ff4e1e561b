"""Industry data templates: named lists of typed fields, after the national system's templates.

Each of the 25 industries of the ``guangzhou-2021`` preset has one (``CATALOGUE``, keyed by
industry code). A templated record holds one Handle value per field, whose ``type`` is the
field's name and whose data is text (``format`` string), at indexes 2, 3, … in template
order (index 1 is the record's URL, 100 its HS_ADMIN). ``values`` makes the fields' values of a
synthetic or demo record; ``check`` is strict mode.

Strict mode: a prefix opts in with a value of type ``IDSIM_TEMPLATE`` in its ``0.NA/<prefix>``
record, whose data is the template's industry code. The opt-in lives with the prefix (its
owner sets or clears it with an ordinary write, it survives restarts in the node's store and
needs no config reload); the node then refuses (400, responseCode 202) a registration that
misses a required field or holds one of the wrong type, naming the field.

Pure: no I/O. Invariants: every template's field names are distinct lower-case identifiers;
a field's type is one of ``TYPES``; an enum has at least one choice; what ``values`` makes
passes ``check``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Iterable, Mapping

from resolver import errors
from resolver.records import DEFAULT_PERMS, DEFAULT_TTL

__all__ = ["CATALOGUE", "STRICT_TYPE", "TYPES", "Field", "Template", "check", "field_error",
           "compile_fields", "from_spec", "template_of", "to_spec", "values"]

STRICT_TYPE = "IDSIM_TEMPLATE"  # the 0.NA/<prefix> value that turns strict mode on
TYPES = ("string", "int", "decimal", "date", "url", "email", "enum")
_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_CHECKS = {
    "string": re.compile(r".*\S.*", re.S),
    "int": re.compile(r"-?[0-9]{1,19}"),
    "decimal": re.compile(r"-?[0-9]{1,15}(\.[0-9]{1,6})?"),
    "date": re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}"),
    "url": re.compile(r"https?://[^\s/]+(/\S*)?"),
    "email": re.compile(r"[^\s@]+@[^\s@]+\.[^\s@]+"),
}
_WHAT = {"string": "non-empty text", "int": "an integer", "decimal": "a decimal number",
         "date": "a date YYYY-MM-DD", "url": "an http(s) URL", "email": "an e-mail address"}


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    type: str = "string"
    choices: tuple[str, ...] = ()  # enum only
    required: bool = True


@dataclass(frozen=True, slots=True)
class Template:
    industry: str  # the industry code it belongs to, e.g. "automotive"
    name: str  # e.g. "Automotive parts"
    fields: tuple[Field, ...]

    def problems(self) -> list[str]:
        """What is wrong with this template (empty: it is valid)."""
        out, seen = [], set()
        if not self.fields:
            out.append(f"template {self.industry}: has no fields")
        for f in self.fields:
            if not _NAME.fullmatch(f.name) or f.name in seen:
                out.append(f"template {self.industry}: field name {f.name!r} is not a distinct "
                           "lower-case identifier")
            seen.add(f.name)
            if f.type not in TYPES:
                out.append(f"template {self.industry}: field {f.name} has unknown type "
                           f"{f.type!r} (known: {', '.join(TYPES)})")
            if (f.type == "enum") != bool(f.choices):
                out.append(f"template {self.industry}: field {f.name}: choices go with enum only")
        return out


def _t(industry: str, name: str, *specs: str) -> Template:
    return Template(industry, name, tuple(_field(s) for s in specs))


def _field(spec: str) -> Field:
    """``name:type`` or ``name:enum:A|B|C``, a trailing ``?`` on the name: optional."""
    name, _, rest = spec.partition(":")
    kind, _, choices = (rest or "string").partition(":")
    optional = name.endswith("?")
    return Field(name.rstrip("?"), kind, tuple(c for c in choices.split("|") if c), not optional)


CATALOGUE: dict[str, Template] = {t.industry: t for t in (
    _t("electronics", "Electronic component", "part_number", "model", "batch",
       "manufacture_date:date", "rohs:enum:compliant|exempt", "datasheet:url"),
    _t("petrochemicals", "Petrochemical product lot", "product_code", "grade:enum:A|B|C",
       "batch", "net_weight_kg:decimal", "production_date:date", "msds:url"),
    _t("home-appliances", "Home appliance unit", "model", "serial_number", "production_line",
       "manufacture_date:date", "energy_class:enum:1|2|3|4|5", "warranty_months:int"),
    _t("automotive", "Automotive parts", "part_number", "production_line", "batch",
       "manufacture_date:date", "inspection_report:url"),
    _t("advanced-materials", "Material batch", "material_code", "batch", "alloy_grade",
       "tensile_strength_mpa:decimal", "production_date:date", "test_certificate:url"),
    _t("light-textiles", "Textile lot", "style_number", "fabric",
       "size:enum:XS|S|M|L|XL|XXL", "batch", "manufacture_date:date"),
    _t("software", "Software release", "product_code", "version", "build_number:int",
       "release_date:date", "licence:enum:commercial|open-source|trial", "download:url"),
    _t("uhd-display", "Display panel", "panel_model", "resolution:enum:4K|8K",
       "batch", "manufacture_date:date", "inspection_report:url"),
    _t("biomedicine", "Medical product", "product_code", "registration_number", "batch",
       "manufacture_date:date", "expiry_date:date", "manufacturer_contact:email"),
    _t("agri-food", "Food traceability", "product_code", "origin", "batch",
       "production_date:date", "shelf_life_days:int", "inspection_report:url"),
    _t("semiconductors", "Chip lot", "part_number", "wafer_lot", "package:enum:QFN|BGA|SOP|LQFP",
       "test_date:date", "yield_percent:decimal"),
    _t("high-end-equipment", "Machine unit", "model", "serial_number", "production_line",
       "manufacture_date:date", "rated_power_kw:decimal", "manual:url"),
    _t("robotics", "Robot unit", "model", "serial_number", "axes:int", "payload_kg:decimal",
       "manufacture_date:date", "service_contact:email"),
    _t("blockchain-quantum", "Digital credential", "credential_id", "issuer", "issue_date:date",
       "algorithm:enum:SM2|SM3|ECDSA|Ed25519", "verify:url"),
    _t("new-materials", "New-material batch", "material_code", "batch", "purity_percent:decimal",
       "production_date:date", "test_certificate:url"),
    _t("new-energy", "Battery pack", "pack_number", "cell_chemistry:enum:LFP|NCM|LMO",
       "capacity_kwh:decimal", "batch", "manufacture_date:date", "recycling_info:url"),
    _t("laser-additive", "Additive-manufactured part", "part_number", "machine_id",
       "powder_batch", "build_date:date", "layer_thickness_um:int"),
    _t("digital-creativity", "Digital work", "work_id", "title", "creator",
       "publish_date:date", "licence:enum:all-rights-reserved|cc-by|cc-by-nc", "preview:url"),
    _t("safety-environment", "Safety equipment", "product_code", "certificate_number", "batch",
       "manufacture_date:date", "next_inspection:date", "inspection_report:url"),
    _t("precision-instruments", "Instrument", "model", "serial_number",
       "accuracy_class:enum:0.1|0.2|0.5|1.0", "calibration_date:date", "calibration_report:url"),
    _t("shipbuilding", "Marine component", "component_code", "hull_number", "material_grade",
       "weld_batch", "inspection_date:date", "class_certificate:url"),
    _t("rail-transit", "Rolling-stock part", "part_number", "vehicle_type", "batch",
       "manufacture_date:date", "service_life_km:int", "inspection_report:url"),
    _t("furniture", "Furniture item", "model", "material", "colour", "batch",
       "manufacture_date:date", "formaldehyde_class:enum:E0|E1|ENF"),
    _t("ceramics", "Tile lot", "product_code", "size_mm", "grade:enum:premium|standard",
       "batch", "production_date:date", "water_absorption_percent:decimal"),
    _t("cold-chain", "Cold-chain consignment", "consignment_number", "product", "origin",
       "temperature_c:decimal", "ship_date:date", "carrier_contact:email", "tracking:url"),
)}


def template_of(templates: Mapping[str, Template], industry: str) -> Template:
    """The template of *industry* in *templates*, else the catalogue's, else a generic one."""
    found = templates.get(industry) or CATALOGUE.get(industry)
    return found or _t(industry, "Product", "product_code", "batch", "manufacture_date:date")


# ---------------------------------------------------------------- TOML form

def to_spec(template: Template) -> dict:
    """``{"name": …, "fields": {field: "type" | "enum:A|B" (+ "?" for optional)}}``."""
    return {"name": template.name, "fields": {
        f.name: (f.type + (":" + "|".join(f.choices) if f.choices else "")
                 + ("" if f.required else "?")) for f in template.fields}}


def from_spec(industry: str, spec: object) -> Template:
    """The template written by ``to_spec``; ValueError naming what is wrong."""
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) \
            or not isinstance(spec.get("fields"), dict) or set(spec) - {"name", "fields"}:
        raise ValueError(f"[templates.{industry}]: expected name = \"…\" and a fields table")
    fields = []
    for name, kind in spec["fields"].items():
        if not isinstance(kind, str):
            raise ValueError(f"[templates.{industry}.fields]: {name} must be a type name")
        fields.append(_field(f"{name}{'?' if kind.endswith('?') else ''}:{kind.rstrip('?')}"))
    template = Template(industry, spec["name"], tuple(fields))
    if template.problems():
        raise ValueError("; ".join(template.problems()))
    return template


# ---------------------------------------------------------------- values

_PRIMES = (1_000_003, 1_000_033, 1_000_037, 1_000_039, 1_000_081, 1_000_099, 1_000_117,
           1_000_121, 1_000_133, 1_000_151, 1_000_159, 1_000_171)
_DAY = tuple(f"-{d:02d}" for d in range(1, 29))
_INTS = tuple(str(n) for n in range(1, 5001))
_DECIMALS = tuple(f"{n / 10:.1f}" for n in range(10_000))
_THREE = tuple(f"{n:03d}" for n in range(1000))


def _expression(f: Field, prime: int, consts: dict) -> str:
    """Python source of *f*'s value (see ``compile_fields``) over ``h p b s u d``."""
    kind, name, x = f.type, f.name, f"h % {prime}"
    if kind == "enum":
        consts[f"C{prime}"] = f.choices
        return f"C{prime}[{x} % {len(f.choices)}]"
    if kind == "date":
        return f"d + _DAY[{x} % 28]"
    if kind == "int":
        return f"_INTS[{x} % 5000]"
    if kind == "decimal":
        return f"_DECIMALS[{x} % 10000]"
    if kind == "url":
        return f"u + {'/' + name.replace('_', '-')!r}"
    if kind == "email":
        return f"{name.partition('_')[0]!r} + _THREE[{x} % 100][1:] + '@' + p.lower() + " \
               "'.example.cn'"
    if "batch" in name or "lot" in name:
        return "p + b"
    if name.endswith(("number", "code", "_id")) or name == "model":
        return "p + '-' + s"
    return f"{''.join(w[0] for w in name.split('_')).upper()!r} + _THREE[{x} % 1000]"


def compile_fields(template: Template):
    """*template*'s rows maker: ``(h, product, batch, serial, url, stamp) -> rows``, one
    ``records`` row ``[index, name, "string", value, ttl, stamp, perms]`` per field from index
    2, the values as ``values`` describes. Generated as one function per template (no call or
    loop per field: it runs on every synthetic resolve); the source holds only numbers and
    ``repr``'d text, choices are bound by name."""
    consts: dict = {"_DAY": _DAY, "_INTS": _INTS, "_DECIMALS": _DECIMALS, "_THREE": _THREE}
    rows = ", ".join(
        f"[{i + 2}, {f.name!r}, 'string', "
        f"{_expression(f, _PRIMES[i % len(_PRIMES)] + 2 * (i // len(_PRIMES)), consts)}, "
        f"{DEFAULT_TTL}, t, {DEFAULT_PERMS}]" for i, f in enumerate(template.fields))
    source = (f"def rows(h, p, b, s, u, t):\n    d = '20' + b[:2] + '-' + b[2:4]\n"
              f"    return [{rows}]\n")
    exec(compile(source, f"<template {template.industry}>", "exec"), consts)  # noqa: S102
    return consts["rows"]


def values(compiled, h: int, product: str, batch: str, serial: str, url: str) -> list[str]:
    """Plausible values of a template's fields (``compile_fields``), one per field: ``h`` is a
    deterministic 64-bit number, ``product``, ``batch`` (``YYMM``) and ``serial`` the parts of
    the identifier's suffix, ``url`` its page. Each passes ``check`` (the tests say so)."""
    return [row[3] for row in compiled(h, product, batch, serial, url, 0)]


def field_error(template: Template, f: Field, values: Mapping[str, str]) -> str | None:
    """Why *values* (field name -> text) do not satisfy *f*; None when they do."""
    if f.name not in values:
        return None if not f.required else (
            f"template {template.industry}: field {f.name!r} ({f.type}) is missing")
    value = values[f.name]
    if f.type == "enum":
        ok = value in f.choices
        what = f"one of {', '.join(f.choices)}"
    else:
        ok = isinstance(value, str) and _CHECKS[f.type].fullmatch(value) is not None
        if ok and f.type == "date":
            try:
                date.fromisoformat(value)
            except ValueError:
                ok = False
        what = _WHAT[f.type]
    return None if ok else (f"template {template.industry}: field {f.name!r} must be {what}, "
                            f"got {str(value)[:80]!r}")


def check(template: Template, values: Iterable, handle: str) -> None:
    """Strict mode: HandleError 202 (HTTP 400) naming the first field of *template* that the
    record's *values* (``records.Value``) miss or mistype. A field's value is the value whose
    type is the field's name (ASCII case ignored); it must have the string format."""
    by_name = {}
    for v in values:
        name = v.type.lower() if isinstance(v.type, str) else ""
        by_name[name] = v.value if v.format == "string" else None
    for f in template.fields:
        problem = field_error(template, f, by_name)
        if problem:
            raise errors.HandleError(errors.INVALID_VALUE, problem, handle=handle, status=400)
