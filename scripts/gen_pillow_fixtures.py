#!/usr/bin/python3
"""Generates tests/data/images_pillow/: small JPEG/PNG files and what Pillow decodes them to.

The reference pipeline (LLaVA-1.5) reads every image with `Image.open(f).convert('RGB')` and
never applies EXIF orientation. For each file written here, the manifest records the RGB bytes
Pillow produces (a raw HWC uint8 `.rgb` file), its width/height and the mode Pillow opened it
in. tests/images/test_decode_pillow.cpp checks io::decode_image against them byte for byte,
so the test itself never needs Pillow.

Dev-time only. Run with Debian's Pillow (python3-pil 9.4, linked to Debian's libjpeg-turbo
2.1.5; the libjpeg-turbo our decoder links should be the same for the JPEG cases to be
meaningful):
    /usr/bin/python3 scripts/gen_pillow_fixtures.py [OUT_DIR]
Everything is deterministic (fixed seeds, no timestamps); rerunning with the same Pillow and
libjpeg-turbo rewrites identical files.

Most files are encoded by Pillow itself. A few PNG kinds that Pillow cannot write (2/4-bit
gray, 16-bit RGB and gray+alpha, Adam7 interlacing, a palette shorter than the indices used)
are assembled here chunk by chunk with zlib; their expected RGB still comes from Pillow's
reading of them.
"""
import hashlib
import io
import json
import os
import struct
import sys
import zlib

import numpy as np
import PIL
from PIL import Image, features

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "images_pillow")


# ---- source pictures ----------------------------------------------------------------------

def colour_picture(w, h, seed):
    """Gradients in three directions, saturated blocks (YCbCr->RGB clamping), sharp edges
    (chroma upsampling) and noise, as uint8 HWC RGB."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255.0 * x / max(1, w - 1)
    g = 255.0 * y / max(1, h - 1)
    b = 127.5 + 127.5 * np.sin((x + 2 * y) / 5.0)
    img = np.stack([r, g, b], axis=-1)
    img += rng.normal(0.0, 18.0, img.shape)
    # Saturated primaries and a checkerboard with single-pixel edges.
    img[h // 5:h // 5 + 6, 3:11] = (255, 0, 0)
    img[h // 5:h // 5 + 6, 11:19] = (0, 0, 255)
    img[h // 2:h // 2 + 5, w // 2:w // 2 + 7] = (0, 255, 0)
    checker = ((x.astype(int) + y.astype(int)) % 2 == 0) & (y > h - 7) & (x > w - 12)
    img[checker] = (255, 255, 0)
    img[~checker & (y > h - 7) & (x > w - 12)] = (255, 0, 255)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def gray_picture(w, h, seed):
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    v = 255.0 * (x + y) / max(1, w + h - 2) + rng.normal(0.0, 20.0, (h, w))
    v[h // 3:h // 3 + 4, :] = 0
    v[:, w // 3:w // 3 + 3] = 255
    return np.clip(np.rint(v), 0, 255).astype(np.uint8)


def alpha_plane(w, h, seed):
    rng = np.random.RandomState(seed)
    a = rng.randint(0, 256, (h, w)).astype(np.uint8)
    a[:, : w // 4] = 0  # fully transparent strip: its colour must still come through
    return a


# ---- hand-assembled PNGs ------------------------------------------------------------------

def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def raw_png(w, h, bit_depth, color_type, rows, plte=None, trns=None, interlace=False):
    """rows: list of h lists of samples (ints, already in range for bit_depth), channels
    interleaved. Rows are stored unfiltered; Adam7 when interlace."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]

    def pack_row(samples):
        if bit_depth == 16:
            return b"".join(struct.pack(">H", s) for s in samples)
        if bit_depth == 8:
            return bytes(samples)
        per = 8 // bit_depth
        out = bytearray()
        for i in range(0, len(samples), per):
            byte = 0
            chunk = samples[i:i + per]
            for j, s in enumerate(chunk):
                byte |= s << (8 - bit_depth * (j + 1))
            out.append(byte)
        return bytes(out)

    def pixel(yy, xx):
        return rows[yy][xx * channels:(xx + 1) * channels]

    raw = bytearray()
    if not interlace:
        for yy in range(h):
            raw += b"\0" + pack_row(rows[yy])
    else:
        passes = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
                  (0, 1, 1, 2)]
        for x0, y0, dx, dy in passes:
            xs = list(range(x0, w, dx))
            if not xs:
                continue
            for yy in range(y0, h, dy):
                samples = []
                for xx in xs:
                    samples += list(pixel(yy, xx))
                raw += b"\0" + pack_row(samples)
    out = b"\x89PNG\r\n\x1a\n"
    out += png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 1 if interlace else 0))
    if plte is not None:
        out += png_chunk(b"PLTE", bytes(plte))
    if trns is not None:
        out += png_chunk(b"tRNS", bytes(trns))
    out += png_chunk(b"IDAT", zlib.compress(bytes(raw), 9))
    out += png_chunk(b"IEND", b"")
    return out


# ---- cases ----------------------------------------------------------------------------------

def pillow_bytes(img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def cases():
    c37 = colour_picture(37, 29, 1)
    c64 = colour_picture(64, 48, 2)
    g37 = gray_picture(37, 29, 3)
    rgb37 = Image.fromarray(c37, "RGB")
    rgb64 = Image.fromarray(c64, "RGB")
    out = []

    def add(name, ext, data, note):
        out.append((name, ext, data, note))

    # JPEG
    add("jpeg_420_q90_37x29", "jpg", pillow_bytes(rgb37, "JPEG", quality=90), "baseline 4:2:0, odd size")
    add("jpeg_420_q90_64x48", "jpg", pillow_bytes(rgb64, "JPEG", quality=90), "baseline 4:2:0, MCU-aligned width")
    add("jpeg_444_q90", "jpg", pillow_bytes(rgb37, "JPEG", quality=90, subsampling=0), "4:4:4")
    add("jpeg_422_q90", "jpg", pillow_bytes(rgb37, "JPEG", quality=90, subsampling=1), "4:2:2")
    add("jpeg_progressive", "jpg", pillow_bytes(rgb64, "JPEG", quality=85, progressive=True),
        "progressive 4:2:0")
    add("jpeg_optimized_q50", "jpg", pillow_bytes(rgb37, "JPEG", quality=50, optimize=True),
        "optimized Huffman tables, coarse quantisation")
    add("jpeg_gray", "jpg", pillow_bytes(Image.fromarray(g37, "L"), "JPEG", quality=90), "1-component")
    cmyk = rgb37.convert("CMYK")
    k = np.asarray(cmyk).copy()
    k[..., 3] = np.random.RandomState(4).randint(0, 160, k.shape[:2])  # non-zero K too
    add("jpeg_cmyk", "jpg", pillow_bytes(Image.fromarray(k, "CMYK"), "JPEG", quality=90),
        "4-component, Adobe-inverted CMYK as Pillow writes it")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display; must be ignored
    add("jpeg_exif_orientation6", "jpg", pillow_bytes(rgb37, "JPEG", quality=90, exif=exif.tobytes()),
        "EXIF Orientation=6: not applied, size stays 37x29")

    # PNG written by Pillow
    rgba = np.dstack([c37, alpha_plane(37, 29, 5)])
    add("png_rgba", "png", pillow_bytes(Image.fromarray(rgba, "RGBA"), "PNG"), "alpha dropped, not composited")
    add("png_rgb_64x48", "png", pillow_bytes(rgb64, "PNG"), "8-bit RGB")
    pal = rgb37.quantize(colors=23, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    pal.info["transparency"] = 3
    add("png_palette_trns", "png", pillow_bytes(pal, "PNG", transparency=3),
        "palette with tRNS: palette colours, transparency ignored")
    g16 = np.random.RandomState(6).randint(0, 65536, (29, 37)).astype(np.uint16)
    g16[:, :18] = np.random.RandomState(7).randint(0, 512, (29, 18))  # around the clip point
    add("png_gray16", "png", pillow_bytes(Image.fromarray(g16, "I;16"), "PNG"),
        "16-bit gray: mode I, clipped to 0..255")
    la = Image.merge("LA", [Image.fromarray(g37, "L"), Image.fromarray(alpha_plane(37, 29, 8), "L")])
    add("png_la", "png", pillow_bytes(la, "PNG"), "gray+alpha: gray replicated, alpha dropped")
    add("png_gray8", "png", pillow_bytes(Image.fromarray(g37, "L"), "PNG"), "8-bit gray")
    add("png_bilevel", "png", pillow_bytes(Image.fromarray(g37 > 128).convert("1"), "PNG"),
        "1-bit gray (mode 1)")

    # PNG assembled here (kinds Pillow does not write)
    rng = np.random.RandomState(9)
    g4 = rng.randint(0, 16, (29, 37))
    add("png_gray4", "png", raw_png(37, 29, 4, 0, [list(r) for r in g4]), "4-bit gray scaled by 17")
    g2 = rng.randint(0, 4, (29, 37))
    add("png_gray2", "png", raw_png(37, 29, 2, 0, [list(r) for r in g2]), "2-bit gray scaled by 85")
    rgb16 = rng.randint(0, 65536, (29, 37, 3))
    add("png_rgb16", "png", raw_png(37, 29, 16, 2, [list(r.reshape(-1)) for r in rgb16]),
        "16-bit RGB: high byte")
    rgba16 = rng.randint(0, 65536, (29, 37, 4))
    add("png_rgba16", "png", raw_png(37, 29, 16, 6, [list(r.reshape(-1)) for r in rgba16]),
        "16-bit RGBA: high byte, alpha dropped")
    la16 = rng.randint(0, 65536, (29, 37, 2))
    add("png_la16", "png", raw_png(37, 29, 16, 4, [list(r.reshape(-1)) for r in la16]),
        "16-bit gray+alpha (Pillow opens it as RGBA)")
    add("png_rgb_adam7", "png", raw_png(37, 29, 8, 2, [list(r.reshape(-1)) for r in c37], interlace=True),
        "Adam7-interlaced 8-bit RGB")
    short_plte = [10, 20, 30, 200, 100, 50, 0, 255, 0, 255, 255, 255]  # 4 entries
    idx = rng.randint(0, 16, (29, 37))  # indices 4..15 are past the palette
    add("png_palette_short", "png",
        raw_png(37, 29, 4, 3, [list(r) for r in idx], plte=short_plte, trns=[0, 128]),
        "4-bit palette of 4 colours with indices up to 15 and tRNS")
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    manifest = {
        "generator": "scripts/gen_pillow_fixtures.py",
        "reference": "Image.open(file).convert('RGB'), raw HWC uint8 bytes, no EXIF transpose",
        "pillow": PIL.__version__,
        "libjpeg_turbo": features.version("libjpeg_turbo"),
        "libjpeg_api": features.version("jpg"),
        "zlib": features.version("zlib"),
        "numpy": np.__version__,
        "cases": [],
    }
    for name, ext, data, note in cases():
        fname = f"{name}.{ext}"
        with open(os.path.join(OUT, fname), "wb") as f:
            f.write(data)
        im = Image.open(io.BytesIO(data))
        mode = im.mode
        stored_orientation = im.getexif().get(0x0112)
        rgb = im.convert("RGB")
        raw = rgb.tobytes()
        assert len(raw) == rgb.width * rgb.height * 3
        with open(os.path.join(OUT, f"{name}.rgb"), "wb") as f:
            f.write(raw)
        entry = {
            "name": name,
            "file": fname,
            "file_sha256": hashlib.sha256(data).hexdigest(),
            "rgb": f"{name}.rgb",
            "rgb_sha256": hashlib.sha256(raw).hexdigest(),
            "width": rgb.width,
            "height": rgb.height,
            "pillow_mode": mode,
            "note": note,
        }
        if stored_orientation is not None:
            entry["exif_orientation"] = stored_orientation
        manifest["cases"].append(entry)
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    print(f"wrote {len(manifest['cases'])} cases to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
