// recap-engine caption --input on webdataset tars laid out as users have them: every member of
// a good sample carried byte for byte under its own suffix, samples in input order, grouping
// checked with webdataset's own rule (a Python reimplementation of its base_plus_ext and
// group_by_keys), bad / duplicate keys and hostile tars recorded or refused with exact
// messages and exit codes, compressed inputs, and every run bounded in time (timeout) and
// address space (prlimit --as 2 GiB).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "cli_util.h"
#include "tar_builder.h"

using nlohmann::json;
using namespace recap::testing;
namespace io = recap::io;

namespace {

const std::string kData = RECAP_TEST_DATA;
const std::string kWeights = kData + "/tiny/llava_orig_with_vt_fp32";
const std::string kTokenizer = std::string(RECAP_SOURCE_DIR) + "/examples/demo/tokenizer.json";
const std::string kImages = kData + "/tiny/images";

// The caption command on the tiny model, under a 120 s time limit and 2 GiB of address space.
RunResult caption(const std::vector<std::string>& extra) {
  std::vector<std::string> a{"timeout",          "120",      "prlimit",        "--as=2147483648",
                             RECAP_BIN,          "caption",  "--weights",      kWeights,
                             "--tokenizer",      kTokenizer, "--log-interval", "1000",
                             "--max-new-tokens", "6",        "--threads",      "1"};
  a.insert(a.end(), extra.begin(), extra.end());
  return run_cmd(a);
}

// webdataset's grouping of a tar (tariterators.base_plus_ext + group_by_keys, lcase=True), run
// by python3 on `path`: a JSON list of {"key": k, "suffixes": [...]}, or an error line when
// webdataset would refuse the tar (a suffix twice in one sample).
json webdataset_groups(const std::string& path) {
  const std::string script =
      "import json, re, sys, tarfile\n"
      "samples = []\n"
      "cur = None\n"
      "for m in tarfile.open(sys.argv[1]):\n"
      "    if not m.isreg(): continue\n"
      "    mt = re.match(r'^((?:.*/|)[^.]+)[.]([^/]*)$', m.name)\n"
      "    if not mt: continue\n"
      "    key, suffix = mt.group(1), mt.group(2).lower()\n"
      "    if cur is None or key != cur['key']:\n"
      "        cur = {'key': key, 'suffixes': []}\n"
      "        samples.append(cur)\n"
      "    if suffix in cur['suffixes']:\n"
      "        sys.exit('webdataset: duplicate file name in tar file ' + m.name)\n"
      "    cur['suffixes'].append(suffix)\n"
      "print(json.dumps(samples))\n";
  auto r = run_cmd({"python3", "-c", script, path});
  EXPECT_EQ(r.rc, 0) << r.out;
  try {
    return json::parse(r.out);
  } catch (const std::exception&) {
    ADD_FAILURE() << "python output: " << r.out;
    return json::array();
  }
}

std::string binary_bytes(size_t n, int mul) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * static_cast<size_t>(mul)) & 0xff);
  return s;
}

}  // namespace

TEST(WebdatasetCli, EveryMemberCarriedInInputOrderBadAndDuplicateKeysRecorded) {
  auto dir = make_temp_dir("wds_faithful");
  const std::string jpg = io::read_file(kImages + "/gray_square.jpg");
  const std::string png = io::read_file(kImages + "/small_wide.png");
  const std::string npy = binary_bytes(3000, 7);  // arbitrary bytes, NULs included
  const std::string seg = binary_bytes(700, 3);
  const std::string depth = binary_bytes(333, 11);
  const std::string nul_key = std::string("caf\xc3\xa9\0x", 7);  // non-ASCII: a pax path keeps the NUL
  TarBuilder t;
  t.add("good1.jpg", jpg);
  t.add("good1.txt", "orig one");
  t.add("good1.json", R"({"url": "http://x/1.jpg", "sha256": "s1", "original_width": 31, "status": "old"})");
  t.add("good1.cls", "7\n");
  t.add("good1.npy", npy);
  t.add("good1.seg.jpg", seg);
  t.add("upper.JPEG", jpg);
  t.add("upper.TXT", "orig upper");
  t.add("upper.depth.png", depth);
  const uint64_t dir_at = t.add_dir("somedir/");
  const uint64_t evil_at = t.add("../evil.jpg", jpg);
  t.add("../evil.txt", "tar slip");
  const uint64_t empty_at = t.add(".jpg", jpg);
  const uint64_t dup_at = t.add("dup.png", png);
  t.add("dup.txt", "first dup");
  const uint64_t readme_at = t.add("README", "not a sample");
  t.add("other.jpg", jpg);
  t.add("other.txt", "orig other");
  const uint64_t dup2_at = t.add("dup.jpg", jpg);
  t.add("dup.txt", "second dup");
  const uint64_t nul_at = t.add(nul_key + ".jpg", jpg);
  t.add("dot.jpg", jpg);
  t.add("dot.v2.jpg", seg);
  t.add("dot.txt", "orig dot");
  const uint64_t twice_at = t.add("twice.png", png);
  t.add("twice.txt", "first twice");
  const uint64_t twice2_at = t.add("twice.png", png);
  t.add("twice.txt", "second twice");
  t.add("last.png", png);
  io::make_dirs(dir + "/in");
  const std::string in = dir + "/in/shard-3.tar";
  io::atomic_write(in, t.done());
  const std::string before = io::read_file(in);

  auto r = caption({"--input", in, "--out", dir + "/out"});
  ASSERT_EQ(r.rc, 0) << r.out;
  EXPECT_EQ(io::read_file(in), before) << "the input changed";
  // Skipped entries are warned about with file and offset.
  EXPECT_NE(r.out.find("warning: " + in + ": offset " + std::to_string(dir_at) +
                       ": directory 'somedir/' is not a file, skipped"),
            std::string::npos)
      << r.out;
  EXPECT_NE(
      r.out.find("warning: " + in + ": offset " + std::to_string(readme_at) +
                 ": member 'README' has no suffix (no '.' in its file name, or nothing after it), skipped"),
      std::string::npos)
      << r.out;

  // The sidecar: one record per input sample, in input order, failures with their message.
  auto side = read_jsonl(dir + "/out/shard-3.jsonl");
  std::vector<std::string> keys, statuses;
  for (auto& j : side) {
    keys.push_back(j["key"]);
    statuses.push_back(j["status"]);
  }
  const std::string nul_printable = "caf\xc3\xa9\\x00x";
  EXPECT_EQ(keys, (std::vector<std::string>{"good1", "upper", "../evil", "", "dup", "other", "dup",
                                            nul_printable, "dot", "twice", "twice", "last"}));
  EXPECT_EQ(statuses, (std::vector<std::string>{"success", "success", "failed_to_parse", "failed_to_parse",
                                                "success", "success", "failed_to_parse", "failed_to_parse",
                                                "success", "success", "failed_to_parse", "success"}));
  ASSERT_EQ(side.size(), 12u);
  EXPECT_EQ(side[2]["error_message"],
            in + ": offset " + std::to_string(evil_at) +
                ": bad key '../evil': key contains '.' (webdataset cuts keys at the first dot)");
  EXPECT_EQ(side[3]["error_message"],
            in + ": offset " + std::to_string(empty_at) + ": bad key '': empty key");
  EXPECT_EQ(side[6]["error_message"], in + ": offset " + std::to_string(dup2_at) +
                                          ": duplicate key 'dup' (its first sample is at offset " +
                                          std::to_string(dup_at) + "); this later sample is not written");
  EXPECT_EQ(side[7]["error_message"], in + ": offset " + std::to_string(nul_at) + ": bad key '" +
                                          nul_printable + "': key contains a NUL byte");
  EXPECT_EQ(side[10]["error_message"], in + ": offset " + std::to_string(twice2_at) +
                                           ": duplicate key 'twice' (its first sample is at offset " +
                                           std::to_string(twice_at) + "); this later sample is not written");
  auto stats = json::parse(io::read_file(dir + "/out/shard-3_stats.json"));
  EXPECT_EQ(stats["count"], 12);
  EXPECT_EQ(stats["successes"], 7);
  EXPECT_EQ(stats["failed_to_parse"], 5);

  // The output tar: safe names only, each once.
  std::vector<std::string> order;
  auto tar = read_tar(dir + "/out/shard-3.tar", &order);
  EXPECT_EQ(std::set<std::string>(order.begin(), order.end()).size(), order.size());
  for (auto& name : order) {
    EXPECT_EQ(name.find(".."), std::string::npos) << name;
    EXPECT_NE(name.front(), '/') << name;
    EXPECT_EQ(name.find('\0'), std::string::npos);
  }
  // webdataset groups it into the good samples, in input order, each with its input suffixes
  // plus txt and json.
  auto groups = webdataset_groups(dir + "/out/shard-3.tar");
  const std::vector<std::pair<std::string, std::set<std::string>>> expected{
      {"good1", {"jpg", "txt", "json", "cls", "npy", "seg.jpg"}},
      {"upper", {"jpeg", "txt", "json", "depth.png"}},
      {"dup", {"png", "txt", "json"}},
      {"other", {"jpg", "txt", "json"}},
      {"dot", {"jpg", "v2.jpg", "txt", "json"}},
      {"twice", {"png", "txt", "json"}},
      {"last", {"png", "txt", "json"}},
  };
  ASSERT_EQ(groups.size(), expected.size()) << groups.dump();
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(groups[i]["key"], expected[i].first);
    std::vector<std::string> suffixes = groups[i]["suffixes"];
    EXPECT_EQ(std::set<std::string>(suffixes.begin(), suffixes.end()), expected[i].second)
        << groups[i].dump();
    EXPECT_EQ(suffixes.size(), expected[i].second.size());
  }
  // Byte for byte, under the original suffix.
  EXPECT_EQ(tar["good1.jpg"], jpg);
  EXPECT_EQ(tar["good1.cls"], "7\n");
  EXPECT_EQ(tar["good1.npy"], npy);
  EXPECT_EQ(tar["good1.seg.jpg"], seg);
  EXPECT_EQ(tar["upper.JPEG"], jpg);
  EXPECT_EQ(tar["upper.depth.png"], depth);
  EXPECT_EQ(tar["dup.png"], png);
  EXPECT_EQ(tar["dot.v2.jpg"], seg);
  EXPECT_EQ(tar["twice.png"], png);
  EXPECT_EQ(tar.count("upper.jpg") + tar.count("upper.TXT") + tar.count("dup.jpg"), 0u);
  // Caption fields: {key}.txt is the new caption, the replaced one is org_caption, the
  // input json's own fields are kept.
  auto meta = json::parse(tar["good1.json"]);
  EXPECT_EQ(tar["good1.txt"], meta["re_caption"].get<std::string>());
  EXPECT_EQ(meta["org_caption"], "orig one");
  EXPECT_EQ(meta["caption"], "orig one");
  EXPECT_EQ(meta["url"], "http://x/1.jpg");
  EXPECT_EQ(meta["sha256"], "s1");
  EXPECT_EQ(meta["original_width"], 31);
  EXPECT_EQ(meta["status"], "success");
  EXPECT_EQ(meta["key"], "good1");
  EXPECT_EQ(json::parse(tar["upper.json"])["org_caption"], "orig upper");
  EXPECT_EQ(json::parse(tar["dup.json"])["org_caption"], "first dup");
  EXPECT_EQ(json::parse(tar["twice.json"])["org_caption"], "first twice");
  EXPECT_FALSE(json::parse(tar["last.json"]).contains("org_caption"));  // it had no .txt
}

TEST(WebdatasetCli, CompressedTarsAreCaptionedUnderTheirBaseName) {
  auto dir = make_temp_dir("wds_gz");
  const std::string jpg = io::read_file(kImages + "/gray_square.jpg");
  const std::string png = io::read_file(kImages + "/small_wide.png");
  io::make_dirs(dir + "/in");
  TarBuilder a;
  a.add("a1.jpg", jpg);
  a.add("a1.txt", "cap a1");
  a.add("a1.npy", binary_bytes(999, 5));
  a.add("a2.png", png);
  io::atomic_write(dir + "/a.tar", a.done());
  TarBuilder b;
  b.add("b1.PNG", png);
  b.add("b1.json", R"({"url": "u"})");
  io::atomic_write(dir + "/b.tar", b.done());
  ASSERT_EQ(run_cmd({"sh", "-c",
                     "gzip -c " + dir + "/a.tar > " + dir + "/in/a.tar.gz && gzip -c " + dir + "/b.tar > " +
                         dir + "/in/b.tgz"})
                .rc,
            0);
  auto r = caption({"--input", dir + "/in/a.tar.gz", "--input", dir + "/in/b.tgz", "--out", dir + "/out"});
  ASSERT_EQ(r.rc, 0) << r.out;
  auto ta = read_tar(dir + "/out/a.tar");
  EXPECT_EQ(ta["a1.jpg"], jpg);
  EXPECT_EQ(ta["a1.npy"], binary_bytes(999, 5));
  EXPECT_EQ(ta["a2.png"], png);
  EXPECT_EQ(json::parse(ta["a1.json"])["org_caption"], "cap a1");
  auto tb = read_tar(dir + "/out/b.tar");
  EXPECT_EQ(tb["b1.PNG"], png);
  EXPECT_EQ(json::parse(tb["b1.json"])["url"], "u");
  EXPECT_EQ(read_jsonl(dir + "/out/a.jsonl").size(), 2u);
  EXPECT_EQ(read_jsonl(dir + "/out/b.jsonl").size(), 1u);
  EXPECT_TRUE(io::file_exists(dir + "/out/a_stats.json"));
  EXPECT_TRUE(io::file_exists(dir + "/out/b_stats.json"));
  EXPECT_FALSE(io::file_exists(dir + "/out/a.tar.tar"));
}

TEST(WebdatasetCli, HostilePaxLengthsFailTheShardInBoundedTime) {
  auto dir = make_temp_dir("wds_pax");
  for (const std::string& rec :
       {std::string("-5 path=x\n"), std::string("99999999999999999999999 path=x\n")}) {
    TarBuilder t;
    t.add_header("PaxHeaders/x", rec.size());
    std::string pax = t.bytes;
    pax[156] = 'x';
    std::memset(&pax[148], ' ', 8);
    unsigned sum = 0;
    for (unsigned char c : pax) sum += c;
    char num[8];
    std::snprintf(num, sizeof num, "%06o", sum);
    std::memcpy(&pax[148], num, 6);
    pax[154] = '\0';
    std::string body = rec;
    body.resize(512, '\0');
    const std::string in = dir + "/pax.tar";
    io::atomic_write(in, pax + body + io::tar_member_bytes("k.jpg", "x", 0) + io::tar_end_bytes());
    auto r = caption({"--input", in, "--out", dir + "/out"});
    EXPECT_EQ(r.rc, 1) << r.out;
    EXPECT_NE(r.out.find("shard pax: error: " + in +
                         ": offset 0: malformed pax record at byte 0: its length is not a decimal number " +
                         "(finished samples kept; not marked done)"),
              std::string::npos)
        << r.out;
    EXPECT_FALSE(io::file_exists(dir + "/out/pax_stats.json"));
  }
}

TEST(WebdatasetCli, FourGiBDeclaredMembersNeverAllocateAndGoodSamplesAreCaptioned) {
  auto dir = make_temp_dir("wds_huge");
  const std::string jpg = io::read_file(kImages + "/gray_square.jpg");
  // (1) 512 bytes declaring 4 GiB: the shard fails at once, naming file and offset.
  {
    TarBuilder t;
    t.add_header("k.jpg", 4ull << 30);
    io::atomic_write(dir + "/tiny.tar", t.bytes);
    auto r = caption({"--input", dir + "/tiny.tar", "--out", dir + "/out"});
    EXPECT_EQ(r.rc, 1) << r.out;
    EXPECT_NE(
        r.out.find("shard tiny: error: " + dir + "/tiny.tar: offset 0: member 'k.jpg' declares 4294967296 " +
                   "bytes but the file has 0 left (truncated or corrupt tar)"),
        std::string::npos)
        << r.out;
  }
  // (2) The same header after two good samples: they are captioned and kept (partial log),
  // the shard fails and is not marked done.
  {
    TarBuilder t;
    t.add("g1.jpg", jpg);
    t.add("g2.jpg", jpg);
    const uint64_t at = t.add_header("h.jpg", 4ull << 30);
    io::atomic_write(dir + "/cut.tar", t.bytes + std::string(1024, '\0'));
    auto r = caption({"--input", dir + "/cut.tar", "--out", dir + "/out"});
    EXPECT_EQ(r.rc, 1) << r.out;
    EXPECT_NE(r.out.find("shard cut: error: " + dir + "/cut.tar: offset " + std::to_string(at) +
                         ": member 'h.jpg' declares 4294967296 bytes but the file has 1024 left"),
              std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find("2 samples (2 ok"), std::string::npos) << r.out;
    EXPECT_FALSE(io::file_exists(dir + "/out/cut_stats.json"));
    std::string log = io::read_file(dir + "/out/.cut.log.partial");
    EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 3) << log;  // header + 2 samples
  }
  // (3) A real 5 GiB member (sparse file) between good samples: skipped unread, its sample
  // fails too_large, the samples after it are captioned and the shard is done.
  {
    TarBuilder t;
    t.add("g1.jpg", jpg);
    t.add("big.jpg", jpg);
    const uint64_t at = t.add_header("big.npy", 5ull << 30);
    const std::string head = t.bytes;
    TarBuilder tail;
    tail.add("g3.jpg", jpg);
    const std::string rest = tail.done();
    const std::string in = dir + "/sparse.tar";
    FILE* f = std::fopen(in.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    ASSERT_EQ(std::fwrite(head.data(), 1, head.size(), f), head.size());
    ASSERT_EQ(::fseeko(f, static_cast<off_t>(head.size() + (5ull << 30)), SEEK_SET), 0);
    ASSERT_EQ(std::fwrite(rest.data(), 1, rest.size(), f), rest.size());
    std::fclose(f);
    auto r = caption({"--input", in, "--out", dir + "/out"});
    ASSERT_EQ(r.rc, 0) << r.out;
    auto side = read_jsonl(dir + "/out/sparse.jsonl");
    ASSERT_EQ(side.size(), 3u);
    EXPECT_EQ(side[0]["status"], "success");
    EXPECT_EQ(side[1]["key"], "big");
    EXPECT_EQ(side[1]["status"], "failed_to_download");
    EXPECT_EQ(side[1]["error_message"], in + ": offset " + std::to_string(at) +
                                            ": too_large: member 'big.npy' of 5368709120 bytes exceeds " +
                                            "--max-image-bytes 67108864; skipped unread");
    EXPECT_NE(
        r.out.find("warning: " + in + ": offset " + std::to_string(at) +
                   ": too_large: member 'big.npy' of 5368709120 bytes exceeds --max-image-bytes 67108864; " +
                   "skipped unread (key big, recorded as failed_to_download)"),
        std::string::npos)
        << r.out;
    EXPECT_EQ(side[2]["key"], "g3");
    EXPECT_EQ(side[2]["status"], "success");
    auto tar = read_tar(dir + "/out/sparse.tar");
    EXPECT_EQ(tar.size(), 6u);  // g1 and g3: jpg, txt, json
    EXPECT_EQ(tar.count("big.jpg"), 0u);
  }
}

TEST(WebdatasetCli, TarTruncatedMidMemberFailsTheShardNamingFileAndOffset) {
  auto dir = make_temp_dir("wds_trunc");
  const std::string jpg = io::read_file(kImages + "/gray_square.jpg");
  TarBuilder t;
  t.add("g1.jpg", jpg);
  t.add("g1.txt", "one");
  const uint64_t at = t.add("g2.jpg", jpg);
  const std::string in = dir + "/trunc.tar";
  io::atomic_write(in, t.bytes.substr(0, at + 512 + jpg.size() / 2));
  auto r = caption({"--input", in, "--out", dir + "/out"});
  EXPECT_EQ(r.rc, 1) << r.out;
  EXPECT_NE(r.out.find("shard trunc: error: " + in + ": offset " + std::to_string(at) +
                       ": member 'g2.jpg' declares " + std::to_string(jpg.size()) +
                       " bytes but the file has " + std::to_string(jpg.size() / 2) +
                       " left (truncated or corrupt tar) (finished samples kept; not marked done)"),
            std::string::npos)
      << r.out;
  EXPECT_FALSE(io::file_exists(dir + "/out/trunc_stats.json"));
}

TEST(WebdatasetCli, OutputKeepsInputOrderWhenTheFirstSampleFinishesLast) {
  // The first sample is a 3000x3000 PNG: decoding and resizing it takes far longer than the
  // small images after it, which are therefore captioned first; the output tar still lists
  // the samples in input order.
  auto dir = make_temp_dir("wds_order");
  const std::string make_png =
      "import struct, sys, zlib\n"
      "w = h = 3000\n"
      "row = bytes((i * 7 + i // 3) & 255 for i in range(w * 3))\n"
      "raw = b''.join(b'\\x00' + row[r % 251:] + row[:r % 251] for r in range(h))\n"
      "def chunk(t, d): return struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d))\n"
      "png = b'\\x89PNG\\r\\n\\x1a\\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0))\n"
      "png += chunk(b'IDAT', zlib.compress(raw, 1)) + chunk(b'IEND', b'')\n"
      "open(sys.argv[1], 'wb').write(png)\n";
  auto py = run_cmd({"python3", "-c", make_png, dir + "/big.png"});
  ASSERT_EQ(py.rc, 0) << py.out;
  const std::string big = io::read_file(dir + "/big.png");
  const std::string jpg = io::read_file(kImages + "/gray_square.jpg");
  TarBuilder t;
  t.add("s00.png", big);
  t.add("s00.cls", "0");
  std::vector<std::string> keys{"s00"};
  for (int i = 1; i <= 6; ++i) {
    const std::string k = "s0" + std::to_string(i);
    t.add(k + ".jpg", jpg);
    t.add(k + ".cls", std::to_string(i));
    keys.push_back(k);
  }
  io::atomic_write(dir + "/ordered.tar", t.done());
  auto r = caption(
      {"--input", dir + "/ordered.tar", "--out", dir + "/out", "--max-batch", "4", "--io-workers", "4"});
  ASSERT_EQ(r.rc, 0) << r.out;
  auto groups = webdataset_groups(dir + "/out/ordered.tar");
  std::vector<std::string> got;
  for (auto& g : groups) got.push_back(g["key"]);
  EXPECT_EQ(got, keys);
  auto tar = read_tar(dir + "/out/ordered.tar");
  EXPECT_EQ(tar["s00.png"], big);
  EXPECT_EQ(tar["s06.cls"], "6");
}

TEST(WebdatasetCli, ResumedShardHasEveryCarriedMemberOnceInInputOrder) {
  // --max-samples 3 stops the run after three samples (exit 75, partial files kept); the
  // rerun resumes from them: every sample once, in input order, every member byte-identical.
  auto dir = make_temp_dir("wds_resume");
  const std::string jpg = io::read_file(kImages + "/gray_square.jpg");
  TarBuilder t;
  std::vector<std::string> keys;
  for (int i = 0; i < 6; ++i) {
    std::string k = "r";  // appended: g++ 12 -Wrestrict misfires on "lit" + std::string&&
    k += std::to_string(i);
    t.add(k + ".jpg", jpg);
    t.add(k + ".npy", binary_bytes(100 + static_cast<size_t>(i) * 300, i + 2));
    t.add(k + ".txt", std::string("orig ") + k);
    keys.push_back(k);
  }
  io::atomic_write(dir + "/res.tar", t.done());
  auto first = caption({"--input", dir + "/res.tar", "--out", dir + "/out", "--max-samples", "3"});
  ASSERT_EQ(first.rc, 75) << first.out;
  EXPECT_FALSE(io::file_exists(dir + "/out/res_stats.json"));
  auto second = caption({"--input", dir + "/res.tar", "--out", dir + "/out"});
  ASSERT_EQ(second.rc, 0) << second.out;
  EXPECT_NE(second.out.find("shard res: resuming, 3 sample(s) already done"), std::string::npos)
      << second.out;
  std::vector<std::string> order;
  auto tar = read_tar(dir + "/out/res.tar", &order);
  EXPECT_EQ(order.size(), 6u * 4u);
  EXPECT_EQ(std::set<std::string>(order.begin(), order.end()).size(), order.size());
  auto groups = webdataset_groups(dir + "/out/res.tar");
  std::vector<std::string> got;
  for (auto& g : groups) got.push_back(g["key"]);
  EXPECT_EQ(got, keys);
  for (int i = 0; i < 6; ++i) {
    std::string k = "r";  // appended: g++ 12 -Wrestrict misfires on "lit" + std::string&&
    k += std::to_string(i);
    EXPECT_EQ(tar[k + ".npy"], binary_bytes(100 + static_cast<size_t>(i) * 300, i + 2)) << k;
    EXPECT_EQ(tar[k + ".jpg"], jpg);
    EXPECT_EQ(json::parse(tar[k + ".json"])["org_caption"], std::string("orig ") + k);
  }
  EXPECT_EQ(json::parse(io::read_file(dir + "/out/res_stats.json"))["resumed_samples"], 3);
}

TEST(WebdatasetCli, SampleWithThousandsOfMembersFailsAndTheRestGoesOn) {
  auto dir = make_temp_dir("wds_many");
  const std::string jpg = io::read_file(kImages + "/gray_square.jpg");
  TarBuilder t;
  const uint64_t at = t.add("many.jpg", jpg);
  for (int i = 0; i < 1100; ++i) {
    std::string suffix = "m";  // appended: g++ 12 -Wrestrict misfires on "lit" + std::string&&
    suffix += std::to_string(i);
    t.add("many." + suffix, "x");
  }
  t.add("fine.jpg", jpg);
  const std::string in = dir + "/many.tar";
  io::atomic_write(in, t.done());
  auto r = caption({"--input", in, "--out", dir + "/out"});
  ASSERT_EQ(r.rc, 0) << r.out;
  auto side = read_jsonl(dir + "/out/many.jsonl");
  ASSERT_EQ(side.size(), 2u);
  EXPECT_EQ(side[0]["status"], "failed_to_parse");
  EXPECT_EQ(side[0]["error_message"],
            in + ": offset " + std::to_string(at) + ": sample 'many' has more than 1024 members");
  EXPECT_EQ(side[1]["status"], "success");
  EXPECT_EQ(read_tar(dir + "/out/many.tar").size(), 3u);
}
