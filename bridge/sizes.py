"""Exchange's size texts ("30 GB (32,212,254,720 bytes)", "Unlimited") as byte counts.

Exchange's endpoint sends ByteQuantifiedSize and Unlimited<ByteQuantifiedSize> values as
these texts. Whether a text is a size is known only where the schema is (frames): the
generic CLIXML reader keeps every ``<S>`` a string, and a column declared as a size is
converted here. No third-party import but pandas; nothing from the rest of bridge.
"""

from __future__ import annotations

import re

import pandas as pd

#: What Exchange writes for an Unlimited<T> that has no limit.
UNLIMITED = "Unlimited"

# "109.8 MB (115,131,392 bytes)"; the group separator depends on the server's culture
_SIZE = re.compile(r"^-?[\d.,]+ ?(?:B|KB|MB|GB|TB|PB|EB) \(([\d,. \u00a0\u202f']+) bytes\)$")


def size_bytes(text: str) -> int | None:
    """The byte count of a ByteQuantifiedSize text ("36 MB (37,748,736 bytes)"), else None."""
    match = _SIZE.match(text.strip())
    if match is None:
        return None
    digits = re.sub(r"\D", "", match.group(1))
    return int(digits) if digits else None


def _size_value(value: object) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return None if value != value else int(value)
    return size_bytes(str(value))


def size_column(column: pd.Series) -> pd.Series:
    """A column of size texts, byte counts or "Unlimited" -> bytes as Int64.

    "Unlimited", missing values and texts that are not sizes become missing (<NA>): a
    limit that does not exist has no byte count.
    """
    if column.dtype.kind in "iu":
        return column.astype("Int64")
    values = [_size_value(value) for value in column.tolist()]
    return pd.Series(pd.array(values, dtype="Int64"), index=column.index, name=column.name)
