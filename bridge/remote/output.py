"""Fast output reading: pipeline output left as raw CLIXML for bridge.clixml to read."""

from __future__ import annotations

from typing import Any

from pypsrp.powershell import RunspacePool
from pypsrp.serializer import Serializer

from bridge.clixml import parse_element
from bridge.commands import Row


class _RawOutput:
    """The CLIXML of one PIPELINE_OUTPUT message, not yet read."""

    __slots__ = ("xml",)

    def __init__(self, xml: str) -> None:
        self.xml = xml


class _RawOutputSerializer(Serializer):
    """pypsrp's Serializer, except that pipeline output is left as raw CLIXML.

    Why: about 70% of pypsrp's client CPU goes into building its own objects for every
    output element (re-serializing each child with ET.tostring on the way). psbridge
    reads that CLIXML with bridge.clixml instead, the same reader as for files.

    Where: pypsrp.messages.Message.unpack deserializes a PIPELINE_OUTPUT (and
    PIPELINE_INPUT, which a client never receives) with ``serializer.deserialize(text)``:
    a str, no metadata, ``clear=True``. Every other message passes an ObjectMeta, and
    the serializer's own recursive calls pass ``clear=False``, so this test picks exactly
    the output messages. The pypsrp range is pinned (<0.10) in pyproject.toml, and
    :func:`_install_fast_output` checks the hooks it relies on exist.
    """

    def deserialize(self, element: Any, metadata: Any = None, clear: bool = True) -> Any:
        if metadata is None and clear and isinstance(element, str):
            return _RawOutput(element)
        return super().deserialize(element, metadata, clear)


def _install_fast_output(pool: RunspacePool) -> None:
    fragmenter = getattr(pool, "_fragmenter", None)
    if fragmenter is None or not isinstance(getattr(fragmenter, "serializer", None), Serializer):
        raise RuntimeError("this pypsrp version lays out RunspacePool differently: pin <0.10")
    fragmenter.serializer = _RawOutputSerializer()


def _read_output(item: object, label: str) -> Row:
    xml = item.xml if isinstance(item, _RawOutput) else None
    if xml is None:
        # pypsrp decoded it itself (not expected once the fast path is installed)
        return {"Value": str(item)}
    value = parse_element(xml)
    if isinstance(value, dict):
        return value
    # a bare value (Get-Date, a string): keep it as a one-column row
    return {"Value": value}
