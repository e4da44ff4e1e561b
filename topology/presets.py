"""Ready-made topologies.

``guangzhou-2021`` reproduces the published shape of the Guangzhou national top-level node as
of November 2021: 33 secondary nodes (15 of them in Guangzhou) across 25 industries serving
4,065 enterprises. The node layout is fixed; the seed only decides how unevenly enterprises
are spread over the nodes and what they are called. ``mini`` is a three-node network for
tests and quick demos. Every node has a city (`topology.places` gives its coordinates): the
top-level node is in Guangzhou, and so is the one recursive node unless ``recursive_cities``
asks for several (``recursive`` in the first city, ``recursive-<city>`` in the others).

Invariants: a preset is a pure function of its arguments (the same arguments give an equal
topology and the same TOML, byte for byte) and passes `topology.validation.validate`.
"""
from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

from resolver import population
from resolver.templates import CATALOGUE

from .model import Enterprise, Industry, NodeAddress, SecondarySpec, Topology, TopologyError

__all__ = ["INDUSTRIES", "PRESETS", "get_preset", "guangzhou_2021", "mini"]

# Guangdong's 20 strategic industry clusters, then 5 further manufacturing sectors.
# (slug, display name, words used in enterprise names)
_INDUSTRY_TABLE: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("electronics", "New-Generation Electronic Information",
     ("Electronics", "Optoelectronics", "Communication Equipment")),
    ("petrochemicals", "Green Petrochemicals", ("Petrochemical", "Chemical", "Refining")),
    ("home-appliances", "Smart Home Appliances", ("Appliances", "Electric Appliance", "Smart Home")),
    ("automotive", "Automobiles", ("Automobile", "Auto Parts", "Motor")),
    ("advanced-materials", "Advanced Materials", ("Materials", "Metal Products", "Polymer")),
    ("light-textiles", "Modern Light Industry and Textiles", ("Textile", "Garment", "Lighting")),
    ("software", "Software and Information Services",
     ("Software", "Information Technology", "Data Services")),
    ("uhd-display", "Ultra-HD Video Display", ("Display", "Video Technology", "Panel")),
    ("biomedicine", "Biomedicine and Health", ("Pharmaceutical", "Biotech", "Medical Devices")),
    ("agri-food", "Modern Agriculture and Food", ("Food", "Agricultural", "Beverage")),
    ("semiconductors", "Semiconductors and Integrated Circuits",
     ("Semiconductor", "Microelectronics", "Chip")),
    ("high-end-equipment", "High-End Equipment Manufacturing",
     ("Heavy Industry", "Machinery", "Equipment")),
    ("robotics", "Intelligent Robotics", ("Robotics", "Automation", "Intelligent Equipment")),
    ("blockchain-quantum", "Blockchain and Quantum Information",
     ("Blockchain", "Quantum Technology", "Digital Trust")),
    ("new-materials", "Frontier New Materials", ("New Materials", "Graphene", "Nanomaterials")),
    ("new-energy", "New Energy", ("New Energy", "Battery", "Photovoltaic")),
    ("laser-additive", "Laser and Additive Manufacturing",
     ("Laser", "3D Printing", "Additive Manufacturing")),
    ("digital-creativity", "Digital Creativity", ("Digital Media", "Animation", "Creative Design")),
    ("safety-environment", "Safety, Emergency and Environmental Protection",
     ("Environmental Protection", "Safety Equipment", "Emergency Technology")),
    ("precision-instruments", "Precision Instruments and Equipment",
     ("Precision Instruments", "Measurement", "Sensor")),
    ("shipbuilding", "Shipbuilding and Marine Engineering",
     ("Shipbuilding", "Marine Engineering", "Offshore Equipment")),
    ("rail-transit", "Rail Transit Equipment", ("Rail Transit", "Rolling Stock", "Railway Equipment")),
    ("furniture", "Furniture and Home Furnishing", ("Furniture", "Home Furnishing", "Woodwork")),
    ("ceramics", "Building Ceramics", ("Ceramics", "Tile", "Sanitary Ware")),
    ("cold-chain", "Cold-Chain Logistics", ("Cold Chain", "Logistics", "Supply Chain")),
)

INDUSTRIES: tuple[Industry, ...] = tuple(Industry(code, name) for code, name, _ in _INDUSTRY_TABLE)
_INDUSTRY_NAME = {code: name for code, name, _ in _INDUSTRY_TABLE}
_INDUSTRY_WORDS = {code: words for code, _, words in _INDUSTRY_TABLE}

# The 33 secondary nodes: (node code, city, industry). Fifteen in Guangzhou; eight industries
# have a second node, placed where that industry clusters (Foshan appliances, Huizhou
# petrochemicals, Changsha construction machinery, ...).
_GUANGZHOU_NODES: tuple[tuple[str, str, str], ...] = (
    ("88.101", "Guangzhou", "automotive"),
    ("88.102", "Guangzhou", "software"),
    ("88.105", "Guangzhou", "biomedicine"),
    ("88.107", "Guangzhou", "uhd-display"),
    ("88.110", "Guangzhou", "petrochemicals"),
    ("88.113", "Guangzhou", "light-textiles"),
    ("88.118", "Guangzhou", "home-appliances"),
    ("88.121", "Guangzhou", "agri-food"),
    ("88.124", "Guangzhou", "high-end-equipment"),
    ("88.127", "Guangzhou", "semiconductors"),
    ("88.131", "Guangzhou", "blockchain-quantum"),
    ("88.134", "Guangzhou", "digital-creativity"),
    ("88.136", "Guangzhou", "safety-environment"),
    ("88.139", "Guangzhou", "cold-chain"),
    ("88.142", "Guangzhou", "rail-transit"),
    ("88.201", "Shenzhen", "electronics"),
    ("88.203", "Shenzhen", "laser-additive"),
    ("88.205", "Shenzhen", "new-energy"),
    ("88.211", "Foshan", "home-appliances"),
    ("88.213", "Foshan", "ceramics"),
    ("88.215", "Foshan", "robotics"),
    ("88.221", "Dongguan", "electronics"),
    ("88.225", "Dongguan", "furniture"),
    ("88.231", "Zhuhai", "shipbuilding"),
    ("88.241", "Huizhou", "petrochemicals"),
    ("88.251", "Zhongshan", "light-textiles"),
    ("88.261", "Jiangmen", "rail-transit"),
    ("88.271", "Shantou", "advanced-materials"),
    ("88.281", "Zhaoqing", "new-materials"),
    ("88.301", "Changsha", "high-end-equipment"),
    ("88.311", "Xiamen", "precision-instruments"),
    ("88.321", "Nanning", "agri-food"),
    ("88.331", "Haikou", "biomedicine"),
)

GUANGZHOU_2021_ENTERPRISES = 4065
GUANGZHOU_2021_MIN_PER_NODE = 20

# Word lists for enterprise names: "<City> <Stem> <Industry word> <Company form>".
_STEM_HEADS = (
    "Hua", "Jin", "Tian", "Xin", "Hong", "Guang", "Yue", "Zhong", "Da", "Fu", "Kai", "Long",
    "Ming", "Rui", "Sheng", "Tai", "Wei", "Xing", "Yi", "Yuan", "Zhi", "Hai", "Heng", "Bao",
    "Cheng", "De", "Feng", "Hao", "Jia", "Lian",
)
_STEM_TAILS = (
    "xin", "da", "tong", "sheng", "tai", "feng", "yuan", "hong", "li", "mei", "neng", "rui",
    "wei", "xiang", "yang", "hui", "kang", "lun", "mao", "chuang", "bo", "chen", "fa", "hua",
    "jie", "teng", "yu", "zhan", "heng", "an",
)
_COMPANY_FORMS = (
    "Co., Ltd.", "Technology Co., Ltd.", "Industrial Co., Ltd.", "Group Co., Ltd.",
    "Manufacturing Co., Ltd.", "Holdings Co., Ltd.",
)


def _spread(rng: random.Random, total: int, bins: int, minimum: int, sigma: float) -> list[int]:
    """*total* split over *bins*, each at least *minimum*, heavy-tailed (lognormal weights,
    largest-remainder rounding: ``resolver.population.spread``)."""
    try:
        return population.spread(rng, total, bins, minimum, sigma)
    except ValueError as exc:
        raise TopologyError(str(exc)) from None


def _enterprise_names(rng: random.Random, city: str, industry: str, k: int) -> list[str]:
    """*k* distinct plausible company names for *city* and *industry*."""
    words = _INDUSTRY_WORDS[industry]
    capacity = len(_STEM_HEADS) * len(_STEM_TAILS) * len(words) * len(_COMPANY_FORMS)
    if k > capacity // 2:
        raise TopologyError(f"too many enterprises ({k}) to name for one node")
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < k:
        stem = rng.choice(_STEM_HEADS) + rng.choice(_STEM_TAILS)
        name = f"{city} {stem} {rng.choice(words)} {rng.choice(_COMPANY_FORMS)}"
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def _node(code: str, city: str, industry: str) -> SecondarySpec:
    return SecondarySpec(
        code=code,
        name=f"{city} {_INDUSTRY_NAME[industry]} Secondary Node",
        city=city,
        industry=industry,
        address=NodeAddress("127.0.0.1", 0, 0),  # placeholder; with_ports assigns the real ones
    )


def _build(
    name: str,
    seed: int,
    layout: tuple[tuple[str, str, str], ...],
    counts: list[int],
    numbers_for: Callable[[SecondarySpec, int], list[int]],
    rng: random.Random,
    *,
    base_port: int,
    host: str,
    identifiers_per_enterprise: int,
    recursive_cities: tuple[str, ...] | list[str] = ("Guangzhou",),
) -> Topology:
    nodes = tuple(_node(*row) for row in layout)
    used = {n.industry for n in nodes}
    industries = tuple(i for i in INDUSTRIES if i.code in used)
    enterprises = []
    for node, k in zip(nodes, counts):
        names = _enterprise_names(rng, node.city, node.industry, k)
        for number, ent_name in zip(numbers_for(node, k), names):
            enterprises.append(Enterprise(f"{node.code}.{number}", ent_name, node.code, node.industry))
    placeholder = NodeAddress(host, 0, 0)
    topo = Topology(
        name=name,
        seed=seed,
        top=placeholder,
        recursive=placeholder,
        industries=industries,
        secondaries=nodes,
        enterprises=tuple(enterprises),
        identifiers_per_enterprise=identifiers_per_enterprise,
    )
    topo = topo.with_recursive_cities(tuple(recursive_cities))
    return topo.with_ports(base_port=base_port, host=host)


def guangzhou_2021(
    seed: int = 2021,
    base_port: int = 8000,
    identifiers_per_enterprise: int = 10,
    *,
    host: str = "127.0.0.1",
    recursive_cities: tuple[str, ...] | list[str] = ("Guangzhou",),
) -> Topology:
    """The Guangzhou top-level node's network as published for November 2021.

    1 top-level node, 33 secondary nodes (15 in Guangzhou, 18 in 13 other cities), 25
    industries each served by at least one node, 4,065 enterprises spread heavy-tailed over
    the nodes (every node at least 20). Node *n*'s enterprises are ``<node code>.1`` ..
    ``<node code>.<count>``, so ``88.118.8`` always exists. Ports as `Topology.with_ports`.
    """
    rng = random.Random(seed)
    counts = _spread(rng, GUANGZHOU_2021_ENTERPRISES, len(_GUANGZHOU_NODES),
                     GUANGZHOU_2021_MIN_PER_NODE, sigma=1.2)
    return _with_population(_build(
        "guangzhou-2021", seed, _GUANGZHOU_NODES, counts,
        lambda node, k: list(range(1, k + 1)), rng,
        base_port=base_port, host=host, identifiers_per_enterprise=identifiers_per_enterprise,
        recursive_cities=recursive_cities,
    ), population.GUANGZHOU_2021_IDENTIFIERS)


_MINI_NODES: tuple[tuple[str, str, str], ...] = (
    ("88.101", "Guangzhou", "automotive"),
    ("88.118", "Guangzhou", "home-appliances"),
    ("88.201", "Shenzhen", "electronics"),
)


def mini(
    seed: int = 1,
    base_port: int = 8000,
    identifiers_per_enterprise: int = 10,
    *,
    host: str = "127.0.0.1",
    recursive_cities: tuple[str, ...] | list[str] = ("Guangzhou",),
) -> Topology:
    """Three secondary nodes, three industries, twelve enterprises (at least two per node).

    Enterprise numbers are small distinct integers in 1..20 picked by the seed; node 88.118
    always has enterprise ``88.118.8``.
    """
    rng = random.Random(seed)
    counts = _spread(rng, 12, len(_MINI_NODES), 2, sigma=0.6)

    def numbers(node: SecondarySpec, k: int) -> list[int]:
        picked = rng.sample(range(1, 21), k)
        if node.code == "88.118" and 8 not in picked:
            picked[0] = 8
        return sorted(picked)

    return _with_population(_build(
        "mini", seed, _MINI_NODES, counts, numbers, rng,
        base_port=base_port, host=host, identifiers_per_enterprise=identifiers_per_enterprise,
        recursive_cities=recursive_cities,
    ), MINI_IDENTIFIERS)


# each enterprise's count of registered identifiers and the industry templates.
MINI_IDENTIFIERS = 1_200_000  # mini's population, all 12 enterprises


def _with_population(topo: Topology, total: int) -> Topology:
    """*topo* with its industries' templates and *total* identifiers spread over its
    enterprises (``resolver.population.spread``: at least ``MINIMUM`` each, the rest by
    lognormal weights of sigma ``SIGMA``, from an RNG of its own seeded by the topology's
    seed, so names and node spreads stay what they were)."""
    rng = random.Random(f"{topo.seed}:population")
    counts = population.spread(rng, total, len(topo.enterprises), population.MINIMUM,
                               population.SIGMA)
    return dataclasses.replace(
        topo,
        enterprises=tuple(dataclasses.replace(e, identifiers=n)
                          for e, n in zip(topo.enterprises, counts)),
        templates=tuple(CATALOGUE[i.code] for i in topo.industries))


PRESETS: dict[str, Callable[..., Topology]] = {
    "guangzhou-2021": guangzhou_2021,
    "mini": mini,
}


def get_preset(name: str, **kw: object) -> Topology:
    """Build the preset *name* (``guangzhou-2021`` or ``guangzhou_2021``, ``mini``).

    Keyword arguments go to the preset function (``seed``, ``base_port``, ...).
    """
    key = str(name).strip().lower().replace("_", "-")
    try:
        factory = PRESETS[key]
    except KeyError:
        raise TopologyError(
            f"unknown topology preset {name!r}; available: {', '.join(sorted(PRESETS))}"
        ) from None
    return factory(**kw)
