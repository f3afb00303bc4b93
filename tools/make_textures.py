#!/usr/bin/python3
"""Writes the room's textures into assets/textures/ (PNG, made here from noise: CC0).

    tools/make_textures.py

Deterministic: the same files every run. Standard library only.
"""

import math
import os
import random
import struct
import zlib

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "assets", "textures")


def png(path, width, height, pixel):
    rows = bytearray()
    for y in range(height):
        rows.append(0)
        for x in range(width):
            rows.extend(max(0, min(255, int(c))) for c in pixel(x, y))

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    data = b"\x89PNG\r\n\x1a\n"
    data += chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    data += chunk(b"IDAT", zlib.compress(bytes(rows), 9))
    data += chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)


def value_noise(seed, size, cells):
    """Tileable smooth noise in [0, 1] on a size x size grid."""
    rng = random.Random(seed)
    grid = [[rng.random() for _ in range(cells)] for _ in range(cells)]

    def at(x, y):
        fx, fy = x / size * cells, y / size * cells
        x0, y0 = int(fx) % cells, int(fy) % cells
        x1, y1 = (x0 + 1) % cells, (y0 + 1) % cells
        tx, ty = fx - int(fx), fy - int(fy)
        tx, ty = tx * tx * (3 - 2 * tx), ty * ty * (3 - 2 * ty)
        top = grid[y0][x0] * (1 - tx) + grid[y0][x1] * tx
        bottom = grid[y1][x0] * (1 - tx) + grid[y1][x1] * tx
        return top * (1 - ty) + bottom * ty

    return at


def wood_floor():
    """Oak planks: 8 rows of planks across, staggered, with grain and seams."""
    size = 256
    grain = value_noise(1, size, 64)
    tone = value_noise(2, size, 8)
    rng = random.Random(3)
    shades = [rng.uniform(0.85, 1.12) for _ in range(32)]

    def pixel(x, y):
        row = y // 32
        offset = (row * 80) % size
        plank = ((x + offset) % size) // 128 + row * 2
        seam = (y % 32 in (0, 31)) or ((x + offset) % 128 in (0, 127))
        g = grain((x + offset) * 0.5 % size, (y * 3 + row * 37) % size)
        k = shades[plank % 32] * (0.88 + 0.2 * g + 0.08 * tone(x, y))
        if seam:
            k *= 0.55
        return (176 * k, 128 * k, 86 * k)

    png(os.path.join(OUT, "floor_oak.png"), size, size, pixel)


def plaster():
    """Warm off-white plaster with a soft mottle."""
    size = 128
    coarse = value_noise(4, size, 8)
    fine = value_noise(5, size, 32)

    def pixel(x, y):
        k = 0.92 + 0.06 * coarse(x, y) + 0.03 * fine(x, y)
        return (236 * k, 228 * k, 214 * k)

    png(os.path.join(OUT, "wall_plaster.png"), size, size, pixel)


def rug():
    """A woven rug: fine cross-hatch in deep teal."""
    size = 64
    mottle = value_noise(6, size, 8)

    def pixel(x, y):
        weave = 0.9 + 0.1 * math.sin(x * math.pi / 2) * math.sin(y * math.pi / 2)
        k = weave * (0.9 + 0.15 * mottle(x, y))
        return (46 * k, 92 * k, 98 * k)

    png(os.path.join(OUT, "rug_weave.png"), size, size, pixel)


def fabric():
    """Chair upholstery: a dark slate twill."""
    size = 64
    mottle = value_noise(7, size, 8)

    def pixel(x, y):
        twill = 0.92 + 0.08 * (((x + y) // 2) % 2)
        k = twill * (0.92 + 0.1 * mottle(x, y))
        return (62 * k, 70 * k, 88 * k)

    png(os.path.join(OUT, "chair_fabric.png"), size, size, pixel)


def walnut():
    """A table top: dark walnut, fine grain, no seams."""
    size = 128
    grain = value_noise(8, size, 32)
    tone = value_noise(9, size, 4)

    def pixel(x, y):
        g = grain(x, y * 4 % size)
        k = 0.85 + 0.18 * g + 0.1 * tone(x, y)
        return (120 * k, 80 * k, 52 * k)

    png(os.path.join(OUT, "table_walnut.png"), size, size, pixel)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    wood_floor()
    plaster()
    rug()
    fabric()
    walnut()
