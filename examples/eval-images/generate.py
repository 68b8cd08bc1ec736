#!/usr/bin/env python3
"""Writes the eval-quant image set (examples/eval-images/*.png): a dozen varied procedural
images -- scenes, gradients, shapes, noise, photo-like textures -- made here from formulas and a
fixed seed, so they are free of any licence but this repository's. Pure Python (zlib for PNG),
deterministic: rerunning rewrites byte-identical files.

    python3 examples/eval-images/generate.py
"""
import math
import os
import random
import struct
import zlib

OUT = os.path.dirname(os.path.abspath(__file__))


def write_png(name, w, h, pixel):
    """pixel(x, y) -> (r, g, b) ints in 0..255."""
    raw = bytearray()
    for y in range(h):
        raw.append(0)  # filter: none
        for x in range(w):
            r, g, b = pixel(x, y)
            raw += bytes((max(0, min(255, int(r))), max(0, min(255, int(g))), max(0, min(255, int(b)))))

    def chunk(tag, data):
        c = struct.pack(">I", len(data)) + tag + data
        return c + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(bytes(raw), 9)) + chunk(b"IEND", b"")
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(png)


def value_noise(seed, cells):
    rng = random.Random(seed)
    grid = [[rng.random() for _ in range(cells + 1)] for _ in range(cells + 1)]

    def at(u, v):  # u, v in [0, 1)
        x, y = u * cells, v * cells
        i, j = int(x), int(y)
        fx, fy = x - i, y - j
        sx, sy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
        a = grid[j][i] * (1 - sx) + grid[j][i + 1] * sx
        b = grid[j + 1][i] * (1 - sx) + grid[j + 1][i + 1] * sx
        return a * (1 - sy) + b * sy

    return at


def fbm(seed, u, v, octaves=(4, 8, 16, 32)):
    total, amp, norm = 0.0, 1.0, 0.0
    for k, cells in enumerate(octaves):
        total += amp * NOISES[(seed, cells)](u % 1.0, v % 1.0)
        norm += amp
        amp *= 0.5
    return total / norm


NOISES = {}
for s in range(6):
    for c in (4, 8, 16, 32):
        NOISES[(s, c)] = value_noise(s * 100 + c, c)


def landscape(x, y, w=320, h=240):
    u, v = x / w, y / h
    ridge = 0.45 + 0.12 * (fbm(0, u * 1.5, 0.3) - 0.5) * 2
    if v < ridge:  # sky, sun
        d = math.hypot(u - 0.75, v - 0.18)
        sun = max(0.0, 1 - d / 0.07) * 255
        return (110 + 100 * v + sun, 160 + 80 * v + sun, 235 + sun * 0.1)
    if v < ridge + 0.25:  # hills
        t = fbm(1, u * 4, v * 4)
        return (40 + 60 * t, 110 + 80 * t, 40 + 30 * t)
    t = fbm(2, u * 3, v * 8)  # lake
    return (30 + 40 * t, 70 + 50 * t, 120 + 80 * t)


def city_night(x, y, w=320, h=240):
    rng = random.Random(x // 24)
    top = int(h * (0.25 + 0.5 * rng.random()))
    if y < top:
        return (10, 12, 40 + y * 30 // h)
    lit = random.Random(x // 6 * 1000 + y // 8).random() > 0.6 and x % 6 < 4 and y % 8 < 5
    return (230, 200, 90) if lit else (25, 25, 35)


def checker(x, y):
    return (230, 230, 230) if ((x // 32) + (y // 32)) % 2 == 0 else (30, 30, 30)


def rainbow_gradient(x, y, w=384, h=192):
    hue = x / w * 6
    i, f = int(hue) % 6, hue - int(hue)
    rgb = [(1, f, 0), (1 - f, 1, 0), (0, 1, f), (0, 1 - f, 1), (f, 0, 1), (1, 0, 1 - f)][i]
    shade = 1 - 0.6 * y / h
    return tuple(255 * c * shade for c in rgb)


def shapes(x, y):
    r = (245, 240, 225)
    if math.hypot(x - 90, y - 100) < 55:
        r = (220, 40, 40)
    if 150 < x < 260 and 60 < y < 170:
        r = (40, 80, 200)
    if 60 < y < 220 and abs(x - 200) < (y - 60) * 0.5 and y > 180:
        r = (250, 200, 30)
    return r


def noise_rgb(x, y):
    rng = random.Random(x * 7919 + y)
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256))


def wood(x, y, w=256, h=256):
    u, v = x / w, y / h
    rings = math.sin((math.hypot(u - 0.3, v * 0.2 - 0.1) * 40 + 6 * fbm(3, u * 2, v * 2)))
    t = 0.5 + 0.5 * rings
    return (120 + 70 * t, 70 + 45 * t, 30 + 20 * t)


def marble(x, y, w=256, h=256):
    u, v = x / w, y / h
    t = 0.5 + 0.5 * math.sin(u * 12 + 8 * fbm(4, u * 2, v * 2))
    return (200 + 50 * t, 200 + 50 * t, 205 + 45 * t)


def portrait_like(x, y, w=240, h=320):
    u, v = x / w, y / h
    bg = (60 + 40 * v, 90, 110)
    face = ((u - 0.5) / 0.22) ** 2 + ((v - 0.4) / 0.28) ** 2 < 1
    body = v > 0.7 and abs(u - 0.5) < 0.1 + (v - 0.7) * 1.2
    if face:
        eye = math.hypot(u - 0.42, v - 0.36) < 0.025 or math.hypot(u - 0.58, v - 0.36) < 0.025
        return (40, 30, 30) if eye else (225, 185, 160)
    if body:
        return (150, 30, 60)
    return bg


def stripes_diag(x, y):
    return (250, 120, 20) if ((x + y) // 20) % 2 else (20, 20, 120)


def clouds_gray(x, y, w=320, h=200):
    t = fbm(5, x / w * 2, y / h * 2)
    g = 80 + 170 * t
    return (g, g, g)


def fruit_bowl(x, y, w=320, h=240):
    r = (200, 180, 150) if y < h * 0.6 else (120, 80, 50)  # wall, table
    for cx, cy, rad, col in ((120, 130, 35, (200, 30, 30)), (170, 120, 32, (240, 170, 20)),
                             (215, 135, 30, (90, 160, 40))):
        d = math.hypot(x - cx, y - cy)
        if d < rad:
            light = 1 - 0.5 * d / rad
            r = tuple(c * light + 40 * (1 - light) for c in col)
    if 80 < x < 260 and 140 < y < 190 and (y - 140) < 50 - abs(x - 170) * 0.25:
        r = (235, 235, 240)
    return r


IMAGES = [
    ("01_landscape.png", 320, 240, landscape),
    ("02_city_night.png", 320, 240, city_night),
    ("03_checker.png", 256, 256, checker),
    ("04_rainbow_gradient.png", 384, 192, rainbow_gradient),
    ("05_shapes.png", 300, 240, shapes),
    ("06_noise.png", 128, 128, noise_rgb),
    ("07_wood.png", 256, 256, wood),
    ("08_marble.png", 256, 256, marble),
    ("09_portrait_like.png", 240, 320, portrait_like),
    ("10_stripes.png", 200, 300, stripes_diag),
    ("11_clouds_gray.png", 320, 200, clouds_gray),
    ("12_fruit_bowl.png", 320, 240, fruit_bowl),
]

if __name__ == "__main__":
    for name, w, h, fn in IMAGES:
        write_png(name, w, h, fn)
        print(name, w, h)
