"""The sandbox organisation's fixed data: names, domains, device models and the draws' helpers."""

from __future__ import annotations

import functools
import random
import unicodedata
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

REFERENCE_BASE = datetime(2025, 6, 16, 7, 0, tzinfo=UTC)
"""Reference "now" of seed 0; other seeds add up to 10 hours (see Organisation)."""

DOMAIN = "contoso.com"
ORGANIZATION = "Contoso"
DOMAIN_CONTROLLER = "DC01.contoso.com"
SERVERS = ("EXCH01", "EXCH02")
SERVER_OFFSET = timedelta(hours=1)  # the servers' local time (WhenCreated etc. carry it)
_SERVER_TZ = timezone(SERVER_OFFSET)
EMPTY_GUID = "00000000-0000-0000-0000-000000000000"

_OFFICES = ("London", "Paris", "Berlin", "Madrid", "New York", "Singapore", "Tokyo", "Dubai")
_DATABASES = tuple(f"DB{n:02d}" for n in range(1, 9))

# (first, last) pools per script; non-Latin entries carry an ASCII form for the alias
_LATIN_FIRST = (
    "James", "Olivia", "Liam", "Emma", "Noah", "Ava", "William", "Sophia", "Lucas", "Mia",
    "Henry", "Amelia", "Oliver", "Harper", "Ethan", "Grace", "Daniel", "Chloe", "Samuel",
    "Ella", "David", "Sarah", "Michael", "Laura", "Thomas", "Anna", "Peter", "Claire",
)
_ACCENTED_FIRST = (
    "José", "Zoë", "Søren", "François", "Jürgen", "Łukasz", "Renée", "Björn", "Inés",
    "Chloé", "Ana María", "Hélène", "Jörg", "Ángel", "Małgorzata", "Çağla", "Nuño",
)
_LATIN_LAST = (
    "Smith", "Johnson", "Brown", "Taylor", "Wilson", "Evans", "Walker", "Wright", "Green",
    "Hall", "Clarke", "Lewis", "Hughes", "Turner", "Baker", "Morris", "Cooper", "Ward",
    "O'Brien", "O'Neill", "D'Souza", "D'Angelo", "O'Connor", "Mac an tSaoi",
)
_ACCENTED_LAST = (
    "Müller", "Núñez", "Østergaard", "Dvořák", "Lefèvre", "García", "Schröder", "Jönsson",
    "Wiśniewska", "Çelik", "Gonçalves", "Ibáñez", "Håkansson", "Fernández-Peña",
)
# (display name, given name ascii, surname ascii, family-name-first)
_NON_LATIN = (
    ("王伟", "wei", "wang"), ("李娜", "na", "li"), ("张敏", "min", "zhang"),
    ("佐藤 花子", "hanako", "sato"), ("鈴木 一郎", "ichiro", "suzuki"),
    ("김민준", "minjun", "kim"), ("이서연", "seoyeon", "lee"),
    ("Дмитрий Иванов", "dmitry", "ivanov"), ("Ольга Смирнова", "olga", "smirnova"),
    ("Ελένη Παπαδοπούλου", "eleni", "papadopoulou"), ("Νίκος Γεωργίου", "nikos", "georgiou"),
    ("محمد الأحمد", "mohammed", "alahmad"), ("فاطمة الزهراء", "fatima", "alzahraa"),
    ("प्रिया शर्मा", "priya", "sharma"), ("יעל כהן", "yael", "cohen"),
)
_SHARED_NAMES = (
    "Finance Team", "Accounts Payable", "Service Desk", "HR Recruitment", "Marketing Events",
    "Sales, EMEA", "Réception", "Press Office", "Payroll", "Legal Contracts", "Facilities",
    "Customer Care", "IT Security", "Travel Desk",
)
_ROOM_NAMES = (
    "Board Room", "Conf Room 3.14", "Training Room", "Salle de réunion Mont-Blanc",
    "Huddle 2A", "会議室 5F", "Sala Goya", "Studio", "Meeting Room Thames",
)

# iOS builds as Exchange reports them ("iOS <version> <build>"), weighted to mid-2025
_IOS_BUILDS = (
    ("18.5", "22F76", 30), ("18.4.1", "22E252", 18), ("18.3.2", "22D82", 8),
    ("17.6.1", "21G93", 14), ("17.5.1", "21F90", 10), ("16.7.10", "20H350", 7),
    ("16.7.8", "20H343", 4), ("15.8.3", "19H386", 3),
)
_ANDROID_VERSIONS = (("15", 30), ("14", 38), ("13", 18), ("12", 9), ("11", 5))
_WINDOWS_BUILDS = (("10.0.26100", 25), ("10.0.22631", 45), ("10.0.19045", 30))
_IPHONE_MODELS = (
    ("iPhone17C1", "iPhone 16 Pro"), ("iPhone16C2", "iPhone 15 Pro Max"),
    ("iPhone15C4", "iPhone 15"), ("iPhone14C7", "iPhone 14"), ("iPhone14C2", "iPhone 13 Pro"),
    ("iPhone13C2", "iPhone 12"), ("iPhone12C8", "iPhone SE"),
)
_IPAD_MODELS = (("iPad13C1", "iPad Air"), ("iPad14C5", "iPad Pro"))
_SAMSUNG_MODELS = ("SM-S928B", "SM-S921B", "SM-S911B", "SM-A546B", "SM-A536B", "SM-G991B")
_PIXEL_MODELS = ("Pixel 9", "Pixel 8 Pro", "Pixel 8a", "Pixel 7")
_OPERATORS = ("Vodafone UK", "EE", "Orange F", "Telekom.de", "Movistar", "Verizon", "SingTel", "")
_SERIAL_CHARS = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
_LANGUAGES = ("en-GB", "en-US", "fr-FR", "de-DE", "es-ES", "ja-JP", "ar-AE")

# device kinds: (kind, weight)
_KINDS = (
    ("outlook_native", 31), ("outlook_rest", 14), ("ios_mail", 28), ("samsung_eas", 11),
    ("gmail_eas", 5), ("windows_mail", 11),
)


def _weighted(table: tuple[tuple[Any, ...], ...]) -> tuple[list[tuple[Any, ...]], list[int]]:
    items = [entry[:-1] if len(entry) > 2 else entry[0] for entry in table]
    weights, total = [], 0
    for entry in table:
        total += entry[-1]
        weights.append(total)
    return items, weights


def _unique(base: str, separator: str, used: dict[str, int]) -> str:
    """``base``, or ``base<sep>N`` with the next free N (counted per base: O(1) per name)."""
    candidate, number = base, used.get(base, 0)
    while candidate in used:
        number += 1
        candidate = f"{base}{separator}{number + 1}"
    used[base] = number
    used.setdefault(candidate, 0)
    return candidate


_TRANSLITERATE = str.maketrans({"ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "æ": "ae", "ß": "ss",
                                "đ": "d", "ı": "i", "'": ""})


@functools.lru_cache(maxsize=4096)
def _ascii(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.translate(_TRANSLITERATE))
    folded = decomposed.encode("ascii", "ignore").decode("ascii")
    return "".join(ch for ch in folded.lower() if ch.isalnum() or ch == "-")


def _canonical_escape(name: str) -> str:
    return name.replace("/", "\\/")


def _dn_escape(name: str) -> str:
    for char in ("\\", ",", "+", '"', "<", ">", ";", "="):
        name = name.replace(char, "\\" + char)
    return name


def _rr(rng: random.Random, start: int, stop: int | None = None) -> int:
    """randrange without its argument checks (generation calls it millions of times)."""
    if stop is None:
        return int(rng.random() * start)
    return start + int(rng.random() * (stop - start))


def _pick(rng: random.Random, items: list[Any], cumulative: list[int]) -> Any:
    target = rng.random() * cumulative[-1]
    for item, bound in zip(items, cumulative, strict=True):
        if target < bound:
            return item
    return items[-1]


_KIND_TABLE = _weighted(_KINDS)
_IOS_TABLE = _weighted(_IOS_BUILDS)
_ANDROID_TABLE = _weighted(_ANDROID_VERSIONS)
_WINDOWS_TABLE = _weighted(_WINDOWS_BUILDS)


def _ios_os(rng: random.Random) -> str:
    version, build = _pick(rng, *_IOS_TABLE)
    return f"iOS {version} {build}"


def _android_os(rng: random.Random) -> str:
    return f"Android {_pick(rng, *_ANDROID_TABLE)}"


def _format_guid(bits: int) -> str:
    value = f"{bits:032x}"
    # a version-4 shaped Guid, as New-Guid would give
    value = value[:12] + "4" + value[13:16] + "89ab"[int(value[16], 16) % 4] + value[17:]
    return f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}"
