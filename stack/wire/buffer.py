"""The type of bytes the codecs accept: payloads travel as memoryview slices, never copies."""

from __future__ import annotations

from typing import Union

BytesLike = Union[bytes, bytearray, memoryview]
