#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into tests/fuzz/corpus/<target>/ (run once; the
files are checked in). Seeds are small: tests/data files and hand-made cases. crash-* files in
those folders are regression inputs kept by hand, never written here."""
import base64
import gzip
import io
import json
import os
import struct
import tarfile

ROOT = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(ROOT))
DATA = os.path.join(REPO, "tests", "data")


def put(target, name, data):
    d = os.path.join(ROOT, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def read(*parts):
    with open(os.path.join(*parts), "rb") as f:
        return f.read()


def safetensors(header, data=b""):
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data


# safetensors
put("safetensors", "f32", safetensors({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
                                      struct.pack("<2f", 1.5, -2.0)))
put("safetensors", "mixed_meta", safetensors(
    {"__metadata__": {"format": "pt"},
     "a": {"dtype": "F16", "shape": [2, 1], "data_offsets": [0, 4]},
     "b": {"dtype": "BF16", "shape": [1], "data_offsets": [4, 6]},
     "c": {"dtype": "I64", "shape": [], "data_offsets": [8, 16]},
     "e": {"dtype": "U8", "shape": [0, 3], "data_offsets": [16, 16]}}, bytes(range(16))))
put("safetensors", "empty_header", safetensors({}))
put("safetensors", "overlap", safetensors({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                                           "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}}, bytes(8)))
put("safetensors", "offsets_past_end", safetensors({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}},
                                                   bytes(8)))

# safetensors index (shards a.safetensors: x, y; b.safetensors: z -- see fuzz_safetensors_index.cpp)
put("safetensors_index", "ok", json.dumps({"metadata": {"total_size": 32},
                                           "weight_map": {"x": "a.safetensors", "y": "a.safetensors",
                                                          "z": "b.safetensors"}}))
put("safetensors_index", "parent", json.dumps({"weight_map": {"z": "../outside.safetensors"}}))
put("safetensors_index", "absolute", json.dumps({"weight_map": {"z": "/abs.safetensors"}}))
put("safetensors_index", "dotted", json.dumps({"weight_map": {"x": "./sub/../a.safetensors"}}))

# configs: first byte = layout (0 llava orig, 1 llava-hf, 2 clip) + 3 * file
# (0/1 config.json, 2 preprocessor_config.json, 3 generation_config.json)
tiny = os.path.join(DATA, "tiny")
put("config", "orig_config", b"\x00" + read(tiny, "llava_orig_with_vt_fp32", "config.json"))
put("config", "hf_config", b"\x01" + read(tiny, "llava_hf_fp32", "config.json"))
put("config", "clip_config", b"\x02" + read(tiny, "clip_vision_fp32", "config.json"))
put("config", "hf_preprocessor", bytes([1 + 3 * 2]) + read(tiny, "llava_hf_fp32", "preprocessor_config.json"))
put("config", "hf_generation", bytes([1 + 3 * 3]) + read(tiny, "llava_hf_fp32", "generation_config.json"))
orig = json.loads(read(tiny, "llava_orig_with_vt_fp32", "config.json"))
orig["num_hidden_layers"] = 1000000000
put("config", "orig_layers_1e9", b"\x00" + json.dumps(orig).encode())
put("config", "orig_theta_overflow", b"\x00" + read(tiny, "llava_orig_with_vt_fp32", "config.json").replace(
    b'"rope_theta": 500000.0', b'"rope_theta": 1e999'))

# tokenizer.json: the demo tokenizer, and a minimal byte-level one
demo_tok = read(REPO, "examples", "demo", "tokenizer.json")
put("tokenizer", "demo", demo_tok)
j = json.loads(demo_tok)
j["model"]["vocab"] = {k: v for k, v in list(j["model"]["vocab"].items())[:300]}
j["model"]["merges"] = []
put("tokenizer", "bytes_only", json.dumps(j))
j2 = json.loads(demo_tok)
j2["added_tokens"][0]["id"] = 4294967297
put("tokenizer", "added_id_overflow", json.dumps(j2))

# encode/decode round trip texts
put("tokenizer_roundtrip", "ascii", "Hello world! It's 2024, isn't it?\n")
put("tokenizer_roundtrip", "unicode", "caf\u00e9 \u65e5\u672c\u8a9e \U0001F600  \t\r\n tabs")
put("tokenizer_roundtrip", "specials", "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>")
put("tokenizer_roundtrip", "invalid_utf8", b"ab\xff\xfe\xc3(\xe2\x82 \xf0\x9f\x98")

# chat templates: first byte even = .json, odd = plain text
put("chat_template", "json_template", b"\x00" + json.dumps(
    {"name": "t", "template": "<|begin_of_text|>{system}\n<image>\n{prompt} {original_caption}{{x}}", "system": "s",
     "bos_per_chunk": False, "stop": ["<|eot_id|>"]}).encode())
put("chat_template", "json_roles", b"\x00" + json.dumps(
    {"roles": ["<|start_header_id|>user<|end_header_id|>\n\n", "<|start_header_id|>assistant<|end_header_id|>\n\n"],
     "sep": "<|eot_id|>", "image": "<image>\n", "prompt": "Describe {key}."}).encode())
put("chat_template", "json_base", b"\x00" + json.dumps({"base": "llava-llama3", "system": "hi {original_caption}"}).encode())
put("chat_template", "text", b"\x01USER: <image>\n{prompt}\nASSISTANT:")

# images
pil = os.path.join(DATA, "images_pillow")
for n in ["jpeg_420_q90_37x29.jpg", "jpeg_progressive.jpg", "jpeg_cmyk.jpg", "jpeg_exif_orientation6.jpg",
          "png_palette_trns.png", "png_gray16.png", "png_la.png"]:
    put("image", n, read(pil, n))
# 1x1 WebP, lossless and lossy (the well-known feature-detection images)
put("image", "lossless.webp", base64.b64decode("UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA=="))
put("image", "lossy.webp", base64.b64decode("UklGRiIAAABXRUJQVlA4IBYAAAAwAQCdASoBAAEADsD+JaQAA3AAAAAA"))

# lists: first byte = name (0 .jsonl, 1 .tsv, 2 .csv, 3 .txt, 4 .jsonl.gz, 5 .tsv.gz, 6 .csv.gz)
put("lists", "jsonl", b"\x00" + b'{"url": "a.jpg", "caption": "x", "key": "k1", "w": 3}\n\n{"URL": "b.png"}\n{bad\n')
put("lists", "tsv", b"\x01url\tcaption\textra\nhttp://x/a.jpg\tcap\t1\nb.jpg\t\t\n")
put("lists", "csv", b"\x02url,TEXT,key\n\"a,b.jpg\",\"say \"\"hi\"\"\",k\nc.jpg,,\n")
put("lists", "txt", b"\x03a.jpg\nhttp://example.com/b.jpg\n\n")
put("lists", "jsonl_gz", b"\x04" + gzip.compress(b'{"url": "a.jpg"}\n'))
put("lists", "tsv_gz", b"\x05" + gzip.compress(b"url\n1.jpg\n"))

# brace patterns
for i, p in enumerate(["shards/{00000..00012}.tar", "{a,b}{1..3}-{x,y,z}", "{10..1}", "a{b,{c,d}}e", "{0..9}{",
                       "plain.tar"]):
    put("braces", "p%d" % i, p)

# tar: a small webdataset shard and a pax/long-name one
def tar_bytes(fmt, members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1700000000
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


put("tar", "ustar", tar_bytes(tarfile.USTAR_FORMAT, [("000001.jpg", b"\xff\xd8abc"), ("000001.txt", b"cap")]))
put("tar", "pax_long", tar_bytes(tarfile.PAX_FORMAT, [("d/" + "n" * 150 + ".json", b"{}"), ("\u00e9.txt", b"x")]))
put("tar", "gnu_long", tar_bytes(tarfile.GNU_FORMAT, [("g" * 120 + ".txt", b"long")]))
put("tar", "own_member", b"dir/key.seg.jpg\nbytes of the member")

# http responses
put("http", "ok", b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 5\r\n\r\nhello")
put("http", "chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
put("http", "not_found", b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
put("http", "gzip", b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" %
    len(gzip.compress(b"body")) + gzip.compress(b"body"))
put("http", "redirect", b"HTTP/1.1 302 Found\r\nLocation: http://example.invalid/x\r\nContent-Length: 0\r\n\r\n")
put("http", "short_body", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
