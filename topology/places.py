"""Where nodes are: the one table of city -> (latitude, longitude), and look-ups in it.

Every node of a topology has a city (``topology.model``: ``SecondarySpec.city``,
``Topology.top_place``, each recursive node's ``Place``); its coordinates are the city's in
``CITIES`` unless the topology gives explicit ``lat``/``lon`` for that node
(``Topology.place_of``). ``topology.validation`` refuses a city that is in neither.

Source: each city's centre as given in the coordinates of its Wikipedia article (taken from
GeoNames; Xi'an: the Bell Tower), rounded to 0.01° (about 1 km). Accuracy: within a few km of
the centre, far below what a delay model at about 200 km of fibre per ms resolves (10 km is
0.05 ms). The table holds every city of the ``guangzhou-2021`` and ``mini`` presets, the
provincial capitals and a few other large industrial cities of mainland China.

Invariants: pure data and pure functions, no I/O; names are matched ignoring case, spaces,
hyphens and apostrophes (``xian``, ``Xi'an`` and ``XI AN`` are the same city), and
``canonical`` gives the table's spelling.
"""
from __future__ import annotations

import re

__all__ = ["CITIES", "canonical", "coordinates", "known", "slug"]

# city: (latitude °N, longitude °E), rounded to 0.01°
CITIES: dict[str, tuple[float, float]] = {
    # Guangdong: the cities of the guangzhou-2021 preset's secondary nodes
    "Guangzhou": (23.13, 113.26),
    "Shenzhen": (22.54, 114.06),
    "Foshan": (23.02, 113.12),
    "Dongguan": (23.02, 113.75),
    "Zhuhai": (22.27, 113.58),
    "Huizhou": (23.11, 114.42),
    "Zhongshan": (22.52, 113.39),
    "Jiangmen": (22.58, 113.08),
    "Shantou": (23.35, 116.68),
    "Zhaoqing": (23.05, 112.47),
    # the preset's secondary nodes outside Guangdong
    "Changsha": (28.23, 112.94),
    "Xiamen": (24.48, 118.09),
    "Nanning": (22.82, 108.32),
    "Haikou": (20.04, 110.34),
    # municipalities and other provincial capitals
    "Beijing": (39.91, 116.40),
    "Shanghai": (31.23, 121.47),
    "Tianjin": (39.13, 117.20),
    "Chongqing": (29.56, 106.55),
    "Chengdu": (30.66, 104.06),
    "Wuhan": (30.59, 114.30),
    "Xi'an": (34.26, 108.94),
    "Hangzhou": (30.27, 120.16),
    "Nanjing": (32.06, 118.80),
    "Hefei": (31.82, 117.23),
    "Fuzhou": (26.07, 119.30),
    "Nanchang": (28.68, 115.86),
    "Jinan": (36.65, 117.12),
    "Zhengzhou": (34.75, 113.63),
    "Shijiazhuang": (38.04, 114.51),
    "Taiyuan": (37.87, 112.55),
    "Hohhot": (40.84, 111.75),
    "Shenyang": (41.81, 123.43),
    "Changchun": (43.82, 125.32),
    "Harbin": (45.80, 126.53),
    "Kunming": (25.04, 102.71),
    "Guiyang": (26.65, 106.63),
    "Lanzhou": (36.06, 103.83),
    "Xining": (36.62, 101.78),
    "Yinchuan": (38.49, 106.23),
    "Urumqi": (43.83, 87.62),
    "Lhasa": (29.65, 91.17),
    # other large industrial cities
    "Suzhou": (31.30, 120.58),
    "Wuxi": (31.49, 120.31),
    "Ningbo": (29.87, 121.54),
    "Qingdao": (36.07, 120.38),
    "Dalian": (38.91, 121.61),
}

_FOLD = re.compile(r"[\s'\u2019_-]+")
_BY_KEY = {_FOLD.sub("", name).lower(): name for name in CITIES}


def _key(city: str) -> str:
    return _FOLD.sub("", city).lower() if isinstance(city, str) else ""


def known(city: object) -> bool:
    """Whether *city* is in the table (spelling folded as in the module docstring)."""
    return _key(city) in _BY_KEY


def canonical(city: str) -> str:
    """The table's spelling of *city* (``xian`` -> ``Xi'an``); KeyError if unknown."""
    try:
        return _BY_KEY[_key(city)]
    except KeyError:
        raise KeyError(f"unknown city {city!r}: give its lat and lon, or one of "
                       f"{', '.join(sorted(CITIES))}") from None


def coordinates(city: str) -> tuple[float, float]:
    """``(latitude, longitude)`` of *city* in degrees; KeyError naming the known cities."""
    return CITIES[canonical(city)]


def slug(city: str) -> str:
    """A lowercase ASCII slug of *city* for node names: ``Xi'an`` -> ``xian``."""
    return re.sub(r"[^a-z0-9]+", "", city.lower())
