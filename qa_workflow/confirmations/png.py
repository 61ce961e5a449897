"""A small PNG decoder and encoder in pure Python (zlib + struct), for the post-labeling Lambda.

The Lambda zips carry the standard library and boto3 only (no Pillow, no numpy), yet the adjust consolidation
must read every worker's mask (the RGBA PNG a browser canvas makes), the model's label map (8-bit grey) and write
label maps back. This covers what those are: non-interlaced PNGs of colour types 0 (grey), 2 (RGB), 3 (palette,
with ``tRNS``), 4 (grey + alpha) and 6 (RGBA), bit depths 1, 2, 4, 8 and 16 (16-bit samples keep their high
byte), all five row filters. Anything else raises `PngError` naming what it found.

Pixels are returned as RGBA bytes (`decode_rgba`) or as one byte per pixel of the first sample (`decode_grey`,
for label maps whose values are the labels).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from qa_workflow.contract import ContractError

__all__ = ["PngError", "PngImage", "decode_png", "decode_rgba", "decode_grey", "encode_png", "PNG_SIGNATURE"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Samples per pixel of each colour type.
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
#: A worker's mask is one slice; refuse images that would take a Lambda's memory (a decompression bomb).
MAX_PIXELS = 4096 * 4096


class PngError(ContractError):
    """Bytes that are not a PNG this decoder reads."""


@dataclass(frozen=True)
class PngImage:
    """A decoded PNG: ``width`` x ``height`` pixels, ``rgba`` the RGBA bytes row by row (4 per pixel)."""

    width: int
    height: int
    rgba: bytes


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    if not data.startswith(PNG_SIGNATURE):
        raise PngError("not a PNG (bad signature)")
    out = []
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if len(body) != length or pos + 12 + length > len(data):
            raise PngError(f"truncated PNG ({kind.decode('latin-1')} chunk)")
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            raise PngError(f"corrupt PNG ({kind.decode('latin-1')} chunk CRC mismatch)")
        out.append((kind, body))
        pos += 12 + length
        if kind == b"IEND":
            return out
    raise PngError("truncated PNG (no IEND chunk)")


def _unfilter(raw: bytes, height: int, stride: int, bpp: int) -> bytearray:
    """Undo the per-row filters (PNG spec §9): returns the raw samples, ``height`` rows of ``stride`` bytes."""
    if len(raw) < height * (stride + 1):
        raise PngError("truncated PNG image data")
    out = bytearray(height * stride)
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        ftype = raw[start]
        line = bytearray(raw[start + 1:start + 1 + stride])
        if ftype == 0:
            pass
        elif ftype == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif ftype == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev, strict=True))
        elif ftype == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif ftype == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b = prev[i]
                c = prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        else:
            raise PngError(f"corrupt PNG (row {y} has unknown filter type {ftype})")
        out[y * stride:(y + 1) * stride] = line
        prev = line
    return out


def _samples(row: bytes | bytearray, width: int, channels: int, depth: int) -> list[int]:
    """One row's samples as 8-bit values (sub-byte depths unpacked, 16-bit reduced to the high byte)."""
    if depth == 8:
        return list(row[:width * channels])
    if depth == 16:
        return list(row[0:width * channels * 2:2])
    per_byte = 8 // depth
    mask = (1 << depth) - 1
    values = []
    for byte in row:
        for k in range(per_byte):
            values.append((byte >> (8 - depth * (k + 1))) & mask)
    return values[:width * channels]


def decode_png(data: bytes) -> tuple[int, int, int, int, list[list[int]], list[tuple[int, int, int, int]] | None]:
    """Low level: ``(width, height, colour type, bit depth, rows of samples, palette as RGBA or None)``.

    Sub-byte samples are their raw values (a palette index, or a grey level 0..2**depth-1)."""
    if not isinstance(data, (bytes, bytearray)):
        raise PngError("not a PNG (expected bytes)")
    chunks = _chunks(bytes(data))
    if not chunks or chunks[0][0] != b"IHDR" or len(chunks[0][1]) != 13:
        raise PngError("corrupt PNG (IHDR must come first)")
    width, height, depth, ctype, compression, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    if ctype not in _CHANNELS or depth not in _DEPTHS[ctype]:
        raise PngError(f"unsupported PNG (colour type {ctype}, bit depth {depth})")
    if compression or filtering:
        raise PngError("unsupported PNG (unknown compression or filter method)")
    if interlace:
        raise PngError("unsupported PNG (interlaced)")
    if not 0 < width * height <= MAX_PIXELS:
        raise PngError(f"unsupported PNG size {width}x{height}")
    palette: list[tuple[int, int, int, int]] | None = None
    alphas = b""
    for kind, body in chunks:
        if kind == b"PLTE":
            palette = [(body[i], body[i + 1], body[i + 2], 255) for i in range(0, len(body) - 2, 3)]
        elif kind == b"tRNS":
            alphas = body
    if ctype == 3:
        if palette is None:
            raise PngError("corrupt PNG (palette image without PLTE)")
        palette = [(r, g, b, alphas[i] if i < len(alphas) else 255) for i, (r, g, b, _) in enumerate(palette)]
    channels = _CHANNELS[ctype]
    stride = (width * channels * depth + 7) // 8
    expected = height * (stride + 1)  # a filter byte per row
    inflater = zlib.decompressobj()
    try:
        # never inflate past the size the header declares: a small answer must not expand to gigabytes
        raw = inflater.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"), expected)
        more = inflater.decompress(inflater.unconsumed_tail, 1)  # only the stream's end may be left
    except zlib.error as exc:
        raise PngError(f"corrupt PNG image data ({exc})") from None
    if more:
        raise PngError(f"corrupt PNG (image data longer than its {width}x{height} header declares)")
    bpp = max(1, channels * depth // 8)
    flat = _unfilter(raw, height, stride, bpp)
    rows = [_samples(flat[y * stride:(y + 1) * stride], width, channels, depth) for y in range(height)]
    return width, height, ctype, depth, rows, palette


def decode_rgba(data: bytes) -> PngImage:
    """Any supported PNG as RGBA bytes (grey is replicated, a missing alpha is 255, palette looked up)."""
    width, height, ctype, depth, rows, palette = decode_png(data)
    out = bytearray()
    scale = 255 // ((1 << depth) - 1) if depth < 8 else 1
    for row in rows:
        if ctype == 6:
            out += bytes(row)
        elif ctype == 2:
            for i in range(0, len(row), 3):
                out += bytes((row[i], row[i + 1], row[i + 2], 255))
        elif ctype == 4:
            for i in range(0, len(row), 2):
                out += bytes((row[i], row[i], row[i], row[i + 1]))
        elif ctype == 0:
            for v in row:
                g = v * scale
                out += bytes((g, g, g, 255))
        else:
            assert palette is not None
            for v in row:
                if v >= len(palette):
                    raise PngError(f"corrupt PNG (palette index {v} out of range)")
                out += bytes(palette[v])
    return PngImage(width, height, bytes(out))


def decode_grey(data: bytes) -> tuple[int, int, bytes]:
    """A label-map PNG (grey or palette) as ``(width, height, one byte per pixel)``: the stored sample values,
    not colours (a palette index is the label)."""
    width, height, ctype, _depth, rows, _palette = decode_png(data)
    if ctype not in (0, 3):
        raise PngError(f"expected a grey or palette label map, got colour type {ctype}")
    return width, height, b"".join(bytes(r) for r in rows)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def encode_png(width: int, height: int, pixels: bytes, channels: int = 1) -> bytes:
    """An 8-bit PNG of ``pixels`` (row by row): 1 channel = grey (a label map), 3 = RGB, 4 = RGBA.

    Deterministic: the same pixels always give the same bytes (a replayed consolidation writes the same file).
    """
    ctype = {1: 0, 3: 2, 4: 6}.get(channels)
    if ctype is None:
        raise ValueError(f"channels must be 1, 3 or 4, got {channels}")
    stride = width * channels
    if len(pixels) != stride * height:
        raise ValueError(f"expected {stride * height} bytes for {width}x{height}x{channels}, got {len(pixels)}")
    raw = b"".join(b"\x00" + pixels[y * stride:(y + 1) * stride] for y in range(height))
    return (PNG_SIGNATURE + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, ctype, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b""))
