#!/usr/bin/env python3
"""Builds examples/demo/tokenizer.json: a small byte-level BPE tokenizer for the bundled tiny
LLaVA model (vocab 1024, BOS=1, EOS=2), in the same tokenizer.json layout as Meta's Llama 3
tokenizer (Split with the Llama-3 regex + ByteLevel, BPE with ignore_merges, ByteLevel
decoder), so the engine loads it with no special case.

Ids: 0..7 special tokens (1 <|begin_of_text|>, 2 <|end_of_text|>, 3 <|start_header_id|>,
4 <|end_header_id|>, 5 <|eot_id|>, others reserved), 8..263 the 256 byte tokens, then BPE
merges learned from the small corpus below until id 1023. Deterministic: rerunning the
script reproduces the file byte for byte.

Usage: python3 examples/demo/make_demo_tokenizer.py [OUT.json]
"""
import collections
import json
import re
import sys

VOCAB_SIZE = 1024
SPECIALS = [
    "<|reserved_special_token_0|>",
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|reserved_special_token_1|>",
    "<|reserved_special_token_2|>",
]
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# Python's re has no \p{..}: an ASCII approximation is enough to pick training pairs.
TRAIN_SPLIT = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\r\n A-Za-z0-9]?[A-Za-z]+|[0-9]{1,3}| ?[^\sA-Za-z0-9]+[\r\n]*"
                         r"|\s*[\r\n]+|\s+(?!\S)|\s+")

CORPUS = """
A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful,
detailed, and polite answers to the user's questions.
Please generate a detailed caption of this image. Please be as descriptive as possible.
The image shows a gray square with a soft gradient in the background.
A wide photo of a sunset over the sea, with orange and purple colors in the sky.
A tall picture of a person standing next to a red car on a city street.
A small dog is running on the green grass in a park on a sunny day.
Two cats are sleeping on a white sofa in a bright living room.
A bowl of fresh fruit, including apples, bananas and oranges, sits on a wooden table.
The photograph captures a mountain landscape with snow on the peaks and a blue lake below.
A group of people are walking along the beach near the water at the end of the day.
An old building with tall windows and a clock tower stands in the center of the town.
A close-up of a yellow flower with green leaves and drops of water on its petals.
A plate of food with rice, vegetables and grilled chicken on a white background.
The image is a simple drawing of shapes: a circle, a square and a triangle in different colors.
A train is passing over a bridge across a river surrounded by trees in autumn.
A child is holding a large balloon and smiling at the camera.
A black and white photo of an empty road that disappears into the distance.
The room has a wooden floor, a large bed, a lamp on a small table and a window with curtains.
A laptop computer, a cup of coffee and a notebook are on the desk.
A bird with blue feathers is sitting on a branch of a tree.
The logo consists of the word in bold letters on a dark background.
There is a bicycle leaning against a brick wall next to a door.
A street at night with lights from the shops and cars reflected on the wet ground.
A man in a suit is speaking into a microphone on a stage in front of an audience.
A field of sunflowers under a clear blue sky on a summer afternoon.
The text in the image reads "open" in large letters above the entrance.
A boat floating on calm water near a wooden dock, with hills in the background.
A kitchen with white cabinets, a stove, a sink and a refrigerator.
A woman wearing a hat and sunglasses is reading a book on a bench.
Several colorful umbrellas are open on the sand near the sea.
"""
# Common words (one line, so every word contributes merges until the vocabulary is full).
WORDS = """
about above across action activity actually address adult afternoon against agency airport album alley
animal answer apartment appear apple area argue arm army around arrive article artist attention autumn
avenue baby balcony ball banana band bank basket bathroom battle beautiful because become bedroom before
begin behind believe below beside between beyond birthday blanket board body book border bottle bottom
branch bread breakfast bright bring brother brown build building business butterfly button cabin cake
camera campus candle capital captain carpet castle cathedral ceiling center century chair champion change
character cheese cherry chicken chocolate church circle citizen classic climb clothing cloud coast coat
collection college color column community company concert condition corner cottage country couple cousin
cover crowd culture curtain customer dance daughter decoration deep deer desert design dessert diagram
dinner direction distance doctor document dollar double dragon dream dress drink driver during eagle early
earth east edge education effect eight electric elephant empty engine evening event everything example
exhibition face factory fair family famous farm fashion father feather feature female fence festival
figure finger fire fish flag flat floor flowers forest fountain frame friend front fruit furniture garden
gate giant glass globe gold government grandmother graphic green ground guitar hair half hall hand happy
harbor heart heavy helmet highway historic holiday horizon horse hospital hotel house human hundred ice
illustration island jacket jewelry journey jungle key king knife ladder lady lamp language large leather
library light lion little living local machine magazine market marble meadow medical metal middle minute
mirror modern moment money monument morning mother motorcycle mouse museum music narrow natural neck
network night north number ocean office orange outdoor painting palace panel paper parade parking party
pattern people pepper phone piano picture pillow pink pizza plant plastic player pocket poster pottery
purple queen rainbow reflection restaurant ribbon river rock roof rose round royal salad sandwich scene
school screen sculpture season shadow sheep shelf shirt shoes shoulder sign silver simple sister skirt
smile snow soccer soldier space sport spring square stadium staircase station statue stone storm student
style subway sugar suitcase surface sweater swimming symbol teacher team temple tennis texture thousand
tiger together tomato tower traffic travel triangle truck turtle uniform university valley vegetable
village vintage violin volcano wall watch waterfall wedding weekend wheel window winter wooden world yellow
"""
CORPUS = CORPUS * 3 + " ".join(WORDS.split())


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + list(
        range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "examples/demo/tokenizer.json"
    b2u = bytes_to_unicode()
    vocab = {}
    for b in range(256):
        vocab[b2u[b]] = len(SPECIALS) + b
    words = collections.Counter()
    for piece in TRAIN_SPLIT.findall(CORPUS):
        words[tuple(b2u[b] for b in piece.encode("utf-8"))] += 1
    merges = []
    next_id = len(SPECIALS) + 256
    while next_id < VOCAB_SIZE:
        pairs = collections.Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        # Most frequent pair; ties broken by the pair's text so the output is deterministic.
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merged = best[0] + best[1]
        merges.append(best[0] + " " + best[1])
        if merged not in vocab:
            vocab[merged] = next_id
            next_id += 1
        new_words = collections.Counter()
        for w, c in words.items():
            nw, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    nw.append(merged)
                    i += 2
                else:
                    nw.append(w[i])
                    i += 1
            new_words[tuple(nw)] += c
        words = new_words
    added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": True} for i, s in enumerate(SPECIALS)]
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": vocab, "merges": merges},
    }
    with open(out, "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{out}: {len(vocab) + len(SPECIALS)} ids ({len(SPECIALS)} special, 256 bytes, {len(merges)} merges)")


if __name__ == "__main__":
    main()
