"""How Exchange's remote endpoint serializes its objects: type-name lists and CLIXML values.

Objects are described as ordered property lists ``(name, kind, value)`` with plain Python
values; this module turns them into CLIXML (compact for the wire, indented for
Export-Clixml files) and into plain records (the ground truth tests compare with).
Exchange sends most complex values as strings (ADObjectId, enums, sizes, time spans),
multi-valued properties as ``<Obj>`` holding a ``<LST>``, Guids as ``<G>``, dates as ``<DT>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

Prop = tuple[str, str, Any]
"""(property name, kind, plain value). Kinds: S, B, G, I32, U32, DTZ (a UTC date written
with ``Z``), DTL (a server-local date written with its offset), SIZE (int bytes or None
for Unlimited, written as Exchange's ByteQuantifiedSize string), DT (a date given as
its .NET text), UNLIMITED (another Unlimited<T> that is unlimited: written as
``Unlimited``, None in records, like a SIZE), MV:<collection key> (list of str)."""

_EXCHANGE = "Version=15.0.0.0, Culture=neutral, PublicKeyToken=31bf3856ad364e35"
_MSCORLIB = "mscorlib, Version=4.0.0.0, Culture=neutral, PublicKeyToken=b77a5c561934e089"

_DIRECTORY = "Microsoft.Exchange.Data.Directory"


def _multi_valued(item: str, *, ad: bool = False) -> tuple[str, ...]:
    """A multi-valued property's type names (``ad``: Directory's ADMultiValuedProperty)."""
    chain = (f"Microsoft.Exchange.Data.MultiValuedProperty`1[[{item}]]",
             "Microsoft.Exchange.Data.MultiValuedPropertyBase", "System.Object")
    return (f"{_DIRECTORY}.ADMultiValuedProperty`1[[{item}]]", *chain) if ad else chain


_AD_BASE = (
    "Microsoft.Exchange.Data.Directory.ADObject",
    "Microsoft.Exchange.Data.Directory.ADRawEntry",
    "Microsoft.Exchange.Data.ConfigurableObject",
    "System.Object",
)

TYPE_NAMES: dict[str, tuple[str, ...]] = {
    "Mailbox": (
        "Microsoft.Exchange.Data.Directory.Management.Mailbox",
        "Microsoft.Exchange.Data.Directory.Management.MailEnabledOrgPerson",
        "Microsoft.Exchange.Data.Directory.Management.MailEnabledRecipient",
        "Microsoft.Exchange.Data.Directory.Management.ADPresentationObject",
        *_AD_BASE,
    ),
    "CASMailbox": (
        "Microsoft.Exchange.Data.Directory.Management.CASMailbox",
        "Microsoft.Exchange.Data.Directory.Management.ADPresentationObject",
        *_AD_BASE,
    ),
    "MobileDevice": (
        "Microsoft.Exchange.Data.Directory.SystemConfiguration.MobileDevice",
        "Microsoft.Exchange.Data.Directory.SystemConfiguration.ADConfigurationObject",
        *_AD_BASE,
    ),
    "MobileDeviceConfiguration": (
        "Microsoft.Exchange.Management.Tasks.MobileDeviceConfiguration",
        "System.Object",
    ),
    # as in the corpus's Exchange 2019 Get-OrganizationConfig export
    "OrganizationConfig": (
        "Microsoft.Exchange.Data.Directory.Management.OrganizationConfig",
        "Microsoft.Exchange.Data.Directory.Management.ADPresentationObject",
        *_AD_BASE,
    ),
    # multi-valued property collections
    "ProxyAddressCollection": (
        "Microsoft.Exchange.Data.ProxyAddressCollection",
        "Microsoft.Exchange.Data.ProxyAddressBaseCollection`1[[Microsoft.Exchange.Data."
        f"ProxyAddress, Microsoft.Exchange.Data, {_EXCHANGE}]]",
        "Microsoft.Exchange.Data.MultiValuedProperty`1[[Microsoft.Exchange.Data.ProxyAddress, "
        f"Microsoft.Exchange.Data, {_EXCHANGE}]]",
        "Microsoft.Exchange.Data.MultiValuedPropertyBase",
        "System.Object",
    ),
    "StringCollection": _multi_valued(f"System.String, {_MSCORLIB}"),
    "GuidCollection": _multi_valued(f"System.Guid, {_MSCORLIB}"),
    "CultureInfoCollection": _multi_valued(f"System.Globalization.CultureInfo, {_MSCORLIB}"),
    "ByteArrayCollection": _multi_valued(f"System.Byte[], {_MSCORLIB}"),
    "ADObjectIdCollection": _multi_valued(f"{_DIRECTORY}.ADObjectId, {_DIRECTORY}, {_EXCHANGE}",
                                          ad=True),
    "ProvisioningPreferences": _multi_valued(
        f"{_DIRECTORY}.MailboxProvisioningConstraint, {_DIRECTORY}, {_EXCHANGE}", ad=True),
    "CapabilityCollection": _multi_valued(f"{_DIRECTORY}.Capability, {_DIRECTORY}, {_EXCHANGE}",
                                          ad=True),
    "AuditOperations": _multi_valued(
        f"{_DIRECTORY}.MailboxAuditOperations, {_DIRECTORY}, {_EXCHANGE}", ad=True),
    "MailboxLocations": (
        f"System.Collections.Generic.List`1[[{_DIRECTORY}.IMailboxLocationInfo, {_DIRECTORY}, "
        f"{_EXCHANGE}]]",
        "System.Object",
    ),
}

_ESCAPE_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f&<>]|_(?=x[0-9A-Fa-f]{4}_)|[\r\n\t]")
_XML_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def _escape_match(match: re.Match[str]) -> str:
    char = match.group(0)
    if char in _XML_ENTITIES:
        return _XML_ENTITIES[char]
    return f"_x{ord(char):04X}_"


def escape(text: str) -> str:
    """Escape text as PowerShell's serializer does (XML entities, control chars as _xHHHH_)."""
    if text.isprintable() and not any(char in text for char in "&<>_"):
        return text  # the common case, without the regex
    return _ESCAPE_RE.sub(_escape_match, text)


_ATTRIBUTES: dict[str, str] = {}


def _attribute(name: str) -> str:
    attr = _ATTRIBUTES.get(name)
    if attr is None:
        attr = _ATTRIBUTES[name] = f' N="{escape(name)}"'
    return attr


def format_datetime(value: datetime, utc: bool) -> str:
    """A .NET round-trip date (``yyyy-MM-ddTHH:mm:ss.FFFFFFFK``): trailing zeros trimmed."""
    if utc:
        value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += ("." + f"{value.microsecond:06d}0").rstrip("0")
    if utc:
        return text + "Z"
    offset = value.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return f"{text}{sign}{minutes // 60:02d}:{minutes % 60:02d}"


_SIZE_UNITS = (("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10))


def format_size(size: int | None) -> str:
    """Exchange's ByteQuantifiedSize/Unlimited text, e.g. ``109.8 MB (115,131,392 bytes)``:
    4 significant digits, never an exponent (the value in its unit is under 1024)."""
    if size is None:
        return "Unlimited"
    for unit, factor in _SIZE_UNITS:
        if size >= factor:
            return f"{size / factor:.4g} {unit} ({size:,} bytes)"
    return f"{size} B ({size:,} bytes)"


class RefScope:
    """RefId and TNRef numbering: per message on the wire, per document in Export-Clixml."""

    def __init__(self) -> None:
        self.next_obj = 0
        self.type_refs: dict[str, int] = {}

    def obj_id(self) -> int:
        self.next_obj += 1
        return self.next_obj - 1


def _type_lines(
    out: list[str], pad: str, step: str, key: str, scope: RefScope, prefix: str
) -> None:
    known = scope.type_refs.get(key)
    if known is not None:
        out.append(f'{pad}<TNRef RefId="{known}" />')
        return
    ref = len(scope.type_refs)
    scope.type_refs[key] = ref
    out.append(f'{pad}<TN RefId="{ref}">')
    for type_name in TYPE_NAMES[key]:
        out.append(f"{pad}{step}<T>{prefix}{escape(type_name)}</T>")
    out.append(f"{pad}</TN>")


def _value_line(name: str, kind: str, value: Any) -> str:
    attr = _attribute(name)
    if kind == "UNLIMITED":
        return f"<S{attr}>Unlimited</S>"
    if value is None and kind != "SIZE":
        return f"<Nil{attr} />"
    if kind == "S":
        return f"<S{attr}>{escape(value)}</S>"
    if kind == "B":
        return f"<B{attr}>{'true' if value else 'false'}</B>"
    if kind == "G":
        return f"<G{attr}>{value}</G>"
    if kind == "I32":
        return f"<I32{attr}>{value}</I32>"
    if kind == "U32":
        return f"<U32{attr}>{value}</U32>"
    if kind == "DTZ":
        return f"<DT{attr}>{format_datetime(value, True)}</DT>"
    if kind == "DTL":
        return f"<DT{attr}>{format_datetime(value, False)}</DT>"
    if kind == "SIZE":
        return f"<S{attr}>{format_size(value)}</S>"
    if kind == "DT":  # a date already in .NET's text (DateTime.MinValue, no zone)
        return f"<DT{attr}>{value}</DT>"
    raise ValueError(f"unknown property kind {kind!r}")


def serialize_object(
    type_key: str,
    to_string: str,
    props: Iterable[Prop],
    scope: RefScope,
    *,
    deserialized: bool = False,
    indent: int | None = None,
    name: str | None = None,
) -> str:
    """One ``<Obj>`` as Exchange's endpoint sends it (``deserialized``: as Export-Clixml of a
    remoted object writes it, type names prefixed). ``indent``: pretty-print at that depth."""
    lines: list[str] = []
    _object_lines(lines, type_key, to_string, props, scope, deserialized, indent, name)
    return ("\r\n" if indent is not None else "").join(lines)


def _object_lines(
    out: list[str],
    type_key: str,
    to_string: str,
    props: Iterable[Prop],
    scope: RefScope,
    deserialized: bool,
    indent: int | None,
    name: str | None,
) -> None:
    step = "  " if indent is not None else ""
    pad = step * (indent or 0)
    prefix = "Deserialized." if deserialized else ""
    attr = f' N="{escape(name)}"' if name is not None else ""
    out.append(f'{pad}<Obj{attr} RefId="{scope.obj_id()}">')
    _type_lines(out, pad + step, step, type_key, scope, prefix)
    out.append(f"{pad}{step}<ToString>{escape(to_string)}</ToString>")
    out.append(f"{pad}{step}<Props>")
    inner = pad + step + step
    for prop_name, kind, value in props:
        if kind.startswith("MV:"):
            _collection_lines(out, prop_name, kind[3:], value, scope, deserialized, indent)
        else:
            out.append(inner + _value_line(prop_name, kind, value))
    out.append(f"{pad}{step}</Props>")
    out.append(f"{pad}</Obj>")


def _collection_lines(
    out: list[str],
    name: str,
    type_key: str,
    values: list[str],
    scope: RefScope,
    deserialized: bool,
    indent: int | None,
) -> None:
    step = "  " if indent is not None else ""
    pad = step * ((indent or 0) + 2)
    prefix = "Deserialized." if deserialized else ""
    out.append(f'{pad}<Obj N="{escape(name)}" RefId="{scope.obj_id()}">')
    _type_lines(out, pad + step, step, type_key, scope, prefix)
    if values:
        out.append(f"{pad}{step}<LST>")
        for item in values:
            out.append(f"{pad}{step}{step}<S>{escape(item)}</S>")
        out.append(f"{pad}{step}</LST>")
    else:
        out.append(f"{pad}{step}<LST />")
    out.append(f"{pad}</Obj>")


def to_record(props: Iterable[Prop]) -> dict[str, Any]:
    """The plain record a reader should produce for these properties (sizes as int bytes,
    Unlimited as None, Guids as str, dates tz-aware, multi-valued as list)."""
    record: dict[str, Any] = {}
    for name, kind, value in props:
        record[name] = list(value) if kind.startswith("MV:") else value
    return record
