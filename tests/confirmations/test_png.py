"""The pure-Python PNG codec the post-labeling Lambda uses, checked against Pillow."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from qa_workflow.confirmations.png import PngError, decode_grey, decode_rgba, encode_png


def _png(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", **kw)
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["RGBA", "RGB", "L", "LA", "P", "1", "I;16"])
def test_decoding_matches_pillow_for_every_colour_type(mode):
    rng = np.random.default_rng(3)
    # Smooth ramps plus noise, so Pillow's encoder picks every row filter (Sub, Up, Average, Paeth).
    yy, xx = np.mgrid[0:37, 0:53]
    base = np.stack([(xx * 5 + yy) % 256, (yy * 7) % 256, (xx * yy) % 256, (xx * 3 + 40) % 256], axis=-1)
    rgba = (base + rng.integers(0, 3, base.shape)).clip(0, 255).astype(np.uint8)
    im = Image.fromarray(rgba, "RGBA")
    im = im.convert("P", palette=Image.Palette.ADAPTIVE, colors=13) if mode == "P" else im.convert(
        "RGB" if mode == "I;16" else mode)
    if mode == "I;16":
        im = Image.fromarray(np.asarray(im.convert("L")).astype(np.uint16) * 257)
    data = _png(im, transparency=2) if mode == "P" else _png(im)
    got = decode_rgba(data)
    if mode == "I;16":  # 16-bit grey keeps its high byte (Pillow's own conversion clips instead)
        grey = (np.asarray(Image.open(io.BytesIO(data))).astype(np.uint16) >> 8).astype(np.uint8)
        expected = np.stack([grey, grey, grey, np.full_like(grey, 255)], axis=-1)
    else:
        expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))
    assert (got.width, got.height) == (53, 37)
    assert np.array_equal(np.frombuffer(got.rgba, np.uint8).reshape(37, 53, 4), expected)


def test_label_maps_round_trip_and_palette_indices_are_labels():
    labels = (np.arange(12 * 9).reshape(9, 12) % 4).astype(np.uint8)
    data = encode_png(12, 9, labels.tobytes())
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), labels)  # Pillow reads what we write
    assert decode_grey(data) == (12, 9, labels.tobytes())
    palette_png = _png(Image.fromarray(labels, "P"))
    assert decode_grey(palette_png)[2] == np.asarray(Image.open(io.BytesIO(palette_png))).tobytes()
    assert encode_png(12, 9, labels.tobytes()) == data  # deterministic


@pytest.mark.parametrize("data, match", [
    (b"GIF89a....", "bad signature"),
    (encode_png(4, 4, bytes(16))[:40], "truncated"),
    (encode_png(4, 4, bytes(16)).replace(b"IDAT", b"IDAt"), "CRC mismatch"),
    ("not bytes", "expected bytes"),
])
def test_malformed_pngs_are_clear_errors(data, match):
    with pytest.raises(PngError, match=match):
        decode_rgba(data)


def test_a_bad_filter_byte_is_refused():
    raw = b"\x07" + bytes(4)  # filter type 7 does not exist
    import struct

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 1, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    with pytest.raises(PngError, match="unknown filter type 7"):
        decode_grey(data)


def test_image_data_longer_than_the_header_declares_is_refused_without_inflating_it():
    """A decompression bomb: a 1x1 header over 50 MB of zeros (50 KB compressed) must fail at once, having
    inflated no more than the header's few bytes."""
    import struct

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(50_000_000), 9)) + chunk(b"IEND", b""))
    assert len(bomb) < 100_000
    with pytest.raises(PngError, match="longer than its 1x1 header declares"):
        decode_grey(bomb)
    exact = encode_png(3, 2, bytes(range(6)))
    assert decode_grey(exact) == (3, 2, bytes(range(6)))
