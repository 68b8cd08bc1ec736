// Issue 14, last "Done when": one `recap-engine caption` run, under `ulimit -v 2000000`, over a
// list that mixes every hostile case of the issue with good images (devices, a FIFO, a
// directory, a sparse file over the size limit, a secret text file, a fake PNG, keys that
// cannot name a sample, a duplicate key, and HTTP answers that are too large, a gzip bomb,
// robots-forbidden or missing) plus two webdataset tars with hostile members. Every good
// image must be captioned, every bad one recorded with its status and message, no secret byte
// may leak, no output name may escape, no input byte may change, and a rerun must duplicate
// nothing. The individual cases have their own tests (test_fetch_cli, test_lists_cli,
// test_webdataset_cli, test_data_safety); this one checks they hold together in one process.
#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "../images/image_writers.h"
#include "../io_lists/loopback_http.h"
#include "cli_util.h"
#include "io/image.h"
#include "tar_builder.h"

using nlohmann::json;
using namespace recap::testing;
namespace io = recap::io;

namespace {

const std::string kData = RECAP_TEST_DATA;
const std::string kWeights = kData + "/tiny/llava_orig_with_vt_fp32";
const std::string kTokenizer = std::string(RECAP_SOURCE_DIR) + "/examples/demo/tokenizer.json";
// Stands for a secret in a file a list names by mistake (or on purpose).
const std::string kSecret = "SECRET-4b1d7e20-must-not-leak";
constexpr int kMaxImageBytes = 1 << 20;  // small, to keep the over-limit cases light
// Wall-clock guard for one run (not a timing assertion): a run that blocks on the FIFO or
// reads /dev/zero whole is killed here instead of hanging the suite. timeout exits 124 then.
constexpr int kGuardSeconds = 300;

// The caption command as issue 14 states it: started through `/bin/sh -c 'ulimit -v 2000000;
// exec ...'` (KiB of address space, ~1.9 GiB), under `timeout`. Two threads, so the vision
// worker thread runs too, and four I/O workers: a realistic thread count under the limit.
RunResult caption_under_ulimit(const std::vector<std::string>& extra) {
  std::vector<std::string> a{"timeout",
                             "-k",
                             "10",
                             std::to_string(kGuardSeconds),
                             "/bin/sh",
                             "-c",
                             "ulimit -v 2000000; exec \"$@\"",
                             "sh",
                             RECAP_BIN,
                             "caption",
                             "--weights",
                             kWeights,
                             "--tokenizer",
                             kTokenizer,
                             "--precision",
                             "f32",
                             "--log-interval",
                             "1000",
                             "--max-new-tokens",
                             "6",
                             "--threads",
                             "2",
                             "--io-workers",
                             "4",
                             "--max-image-bytes",
                             std::to_string(kMaxImageBytes)};
  a.insert(a.end(), extra.begin(), extra.end());
  return run_cmd(a);
}

std::string to_string(const std::vector<uint8_t>& v) {
  return std::string(v.begin(), v.end());
}

// Distinct small images, so each stored image can be matched to its input byte for byte.
std::string make_jpeg(int w, int h, unsigned seed) {
  JpegSpec s = jpeg_spec(w, h, 3, 90);
  s.pixels.resize(static_cast<size_t>(w) * static_cast<size_t>(h) * 3);
  for (size_t i = 0; i < s.pixels.size(); ++i) s.pixels[i] = static_cast<uint8_t>((i * seed + i / 5) & 0xff);
  return to_string(encode_jpeg(s));
}
std::string make_png(int w, int h, unsigned seed) {
  PngSpec s = png_spec(w, h, 2, 8);
  s.samples.resize(static_cast<size_t>(w) * static_cast<size_t>(h) * 3);
  for (size_t i = 0; i < s.samples.size(); ++i)
    s.samples[i] = static_cast<uint32_t>((i * seed + i / 3) & 0xff);
  return to_string(encode_png(s));
}

// Every regular file under `dir`, hidden ones (partial files) included.
std::vector<std::string> files_under(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    const std::string p = dir + "/" + name;
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0) continue;
    if (S_ISDIR(st.st_mode)) {
      auto sub = files_under(p);
      out.insert(out.end(), sub.begin(), sub.end());
    } else if (S_ISREG(st.st_mode)) {
      out.push_back(p);
    }
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

// What identifies each input: the XXH3 of every regular file's bytes, and the file type of
// every other entry (the FIFO stays a FIFO, the directory a directory).
std::map<std::string, std::string> snapshot_inputs(const std::string& dir) {
  std::map<std::string, std::string> m;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return m;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    const std::string p = dir + "/" + name;
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0) continue;
    if (S_ISREG(st.st_mode)) {
      const std::string data = io::read_file(p);
      m[p] =
          "file " + std::to_string(st.st_size) + " " + std::to_string(XXH3_64bits(data.data(), data.size()));
    } else if (S_ISDIR(st.st_mode)) {
      m[p] = "dir";
      for (auto& [k, v] : snapshot_inputs(p)) m[k] = v;
    } else {
      m[p] = S_ISFIFO(st.st_mode) ? "fifo" : "other";
    }
  }
  ::closedir(d);
  return m;
}

// The sample records of a partial log: its first line is the shard header (fingerprint), then
// one line per finished sample whose "meta" is the sidecar record.
std::vector<json> partial_log_samples(const std::string& path) {
  std::vector<json> samples;
  auto lines = read_jsonl(path);
  for (size_t i = 1; i < lines.size(); ++i) samples.push_back(lines[i]["meta"]);
  return samples;
}

struct Expected {
  std::string key;
  std::string status;  // "success" or the failure status
  std::string error;   // exact error_message ("" for a success)
};

void expect_records(const std::vector<json>& side, const std::vector<Expected>& want) {
  ASSERT_EQ(side.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    SCOPED_TRACE(side[i].dump());
    EXPECT_EQ(side[i]["key"], want[i].key);
    EXPECT_EQ(side[i]["status"], want[i].status);
    if (want[i].error.empty())
      EXPECT_TRUE(side[i]["error_message"].is_null());
    else
      EXPECT_EQ(side[i]["error_message"], want[i].error);
  }
}

// key -> status of every record, for the rerun comparison.
std::vector<std::pair<std::string, std::string>> key_status(const std::vector<json>& side) {
  std::vector<std::pair<std::string, std::string>> v;
  for (auto& j : side) v.emplace_back(j["key"].get<std::string>(), j["status"].get<std::string>());
  return v;
}

}  // namespace

TEST(HostileMixCli, OneRunOverEveryHostileInputUnderUlimit) {
  const std::string dir = make_temp_dir("hostile_mix");
  const std::string data = dir + "/data";  // the list and the files it names, as a user has them
  const std::string shards = dir + "/shards";
  const std::string out = dir + "/out";
  io::make_dirs(data + "/img");
  io::make_dirs(data + "/subdir");
  io::make_dirs(shards);

  // Good local images, JPEG and PNG.
  const std::map<std::string, std::string> good_local{
      {"img/a.jpg", make_jpeg(40, 30, 7)},  {"img/b.png", make_png(33, 21, 11)},
      {"img/c.jpg", make_jpeg(24, 48, 13)}, {"img/d.png", make_png(50, 17, 5)},
      {"img/e.jpg", make_jpeg(16, 16, 3)},
  };
  for (auto& [name, bytes] : good_local) io::atomic_write(data + "/" + name, bytes);
  // The hostile local entries.
  const std::string secret_text = "root:x:0:0:" + kSecret + ":/root:/bin/bash\n";
  io::atomic_write(data + "/secret.txt", secret_text);
  // A PNG signature, then junk that holds the secret too: a decoder error must not echo it.
  io::atomic_write(data + "/fake.png", std::string("\x89PNG\r\n\x1a\n", 8) + "junk " + kSecret + " junk");
  ASSERT_EQ(::mkfifo((data + "/fifo").c_str(), 0600), 0);
  { io::OutFile f(data + "/sparse.jpg", io::OutFile::Mode::Truncate); }
  ASSERT_EQ(::truncate((data + "/sparse.jpg").c_str(), 70ll << 20), 0);  // 70 MiB, no blocks

  // The loopback server: one good image and every hostile answer.
  LoopbackHttpServer srv;
  ASSERT_TRUE(srv.ok());
  const std::string http_png = make_png(28, 36, 9);
  srv.set("/good.png", LoopbackHttpServer::Route{200, http_png});
  LoopbackHttpServer::Route chunked{200, std::string(3 << 20, 'x')};
  chunked.chunked = true;  // no Content-Length: the limit must hold while the body streams
  srv.set("/chunked.png", chunked);
  LoopbackHttpServer::Route bomb{200, gzip(std::string(32 << 20, '\0'))};  // ~32 KiB on the wire
  bomb.headers = {"Content-Encoding: gzip"};
  srv.set("/bomb.png", bomb);
  LoopbackHttpServer::Route announced{200, "tiny"};
  announced.content_length = 900000000;
  srv.set("/announced.png", announced);
  LoopbackHttpServer::Route noai{200, http_png};
  noai.headers = {"X-Robots-Tag: noai"};
  srv.set("/noai.png", noai);
  // "/missing.png" has no route: 404.

  // The list: hostile rows interleaved with the good ones. Every row names its key, so the
  // records can be told apart in every output.
  struct Row {
    std::string key, url;
  };
  const std::string ctl_key = std::string("ctl\x01key");
  const std::vector<Row> rows{
      {"good_a", "img/a.jpg"},
      {"dev_zero", "/dev/zero"},
      {"dev_null", "/dev/null"},
      {"good_b", "img/b.png"},
      {"fifo", "fifo"},
      {"directory", "subdir"},
      {"good_c", "img/c.jpg"},
      {"sparse", "sparse.jpg"},
      {"secret", "secret.txt"},
      {"good_d", "img/d.png"},
      {"fake_png", "fake.png"},
      {"../x", "img/a.jpg"},
      {"a.b", "img/b.png"},
      {"", "img/c.jpg"},
      {ctl_key, "img/d.png"},
      {"good_a", "img/e.jpg"},
      {"http_chunked", srv.url("/chunked.png")},
      {"http_bomb", srv.url("/bomb.png")},
      {"good_http", srv.url("/good.png")},
      {"http_announced", srv.url("/announced.png")},
      {"http_noai", srv.url("/noai.png")},
      {"http_404", srv.url("/missing.png")},
      {"good_e", "img/e.jpg"},
  };
  std::string list_text;
  for (auto& r : rows) list_text += json{{"url", r.url}, {"key", r.key}}.dump() + "\n";
  const std::string list = data + "/list.jsonl";
  io::atomic_write(list, list_text);
  ASSERT_NE(list_text.find("\"ctl\\u0001key\""), std::string::npos);  // as a JSON writer escapes it

  // Tar A: good samples with every hostile member that fails only its own sample. Its shard
  // is done (exit 0 on its own).
  const std::string a1 = make_jpeg(20, 20, 17), a2 = make_png(19, 23, 19), a3 = make_jpeg(30, 12, 23),
                    a4 = make_png(12, 30, 29);
  TarBuilder ta;
  ta.add("a1.jpg", a1);
  ta.add("a1.txt", "orig a1");
  const uint64_t evil_at = ta.add("../evil.jpg", a1);
  ta.add("../evil.txt", "tar slip");
  const uint64_t a2_at = ta.add("a2.png", a2);
  ta.add("a2.cls", "2");
  const uint64_t empty_at = ta.add(".jpg", a1);
  ta.add("a3.jpg", a3);
  const uint64_t a2_again_at = ta.add("a2.jpg", a3);  // the key a2 again, later: a duplicate
  ta.add("a2.txt", "second a2");
  ta.add("noimg.txt", "a caption without its image");
  ta.add("noimg.json", R"({"url": "http://example.invalid/noimg.jpg"})");
  ta.add("a4.png", a4);
  const std::string tar_a = shards + "/mixA.tar";
  io::atomic_write(tar_a, ta.done());
  // Tar B: two good samples, then a member declaring 4 GiB in a 1 KiB region. A tar whose
  // member runs past its end is corrupt: the shard fails (exit 1) with the two samples kept
  // in its partial files, never published. It needs a tar of its own so that tar A's shard
  // can finish.
  const std::string b1 = make_jpeg(26, 26, 31), b2 = make_png(21, 21, 37);
  TarBuilder tb;
  tb.add("b1.jpg", b1);
  tb.add("b1.txt", "orig b1");
  tb.add("b2.png", b2);
  const uint64_t huge_at = tb.add_header("huge.jpg", 4ull << 30);
  const std::string tar_b = shards + "/mixB.tar";
  io::atomic_write(tar_b, tb.bytes + std::string(1024, '\0'));

  const auto inputs_before = snapshot_inputs(data);
  const auto shards_before = snapshot_inputs(shards);
  ASSERT_EQ(inputs_before.at(data + "/fifo"), "fifo");

  const std::vector<std::string> args{"--list", list, "--input",        tar_a, "--input",        tar_b,
                                      "--out",  out,  "--http-timeout", "20",  "--http-retries", "2"};
  auto r = caption_under_ulimit(args);
  ASSERT_NE(r.rc, 124) << "the run did not end within " << kGuardSeconds << " s\n" << r.out;
  // Exit 1: tar B is corrupt, which fails its shard (docs/CAPTION.md, "A corrupt tar"); the
  // list's shard and tar A's are finished first.
  EXPECT_EQ(r.rc, 1) << r.out;
  const std::string tail = " (finished samples kept; not marked done)";
  EXPECT_NE(r.out.find("shard mixB: error: " + tar_b + ": offset " + std::to_string(huge_at) +
                       ": member 'huge.jpg' declares 4294967296 bytes but the file has 1024 left "
                       "(truncated or corrupt tar)" +
                       tail),
            std::string::npos)
      << r.out;

  // The summary counts every sample written in this run, tar B's two included.
  EXPECT_NE(r.out.find("caption: finished: 2 shard(s) done, 0 skipped, 1 failed, 0 busy; 33 samples (12 ok, "
                       "21 failed)"),
            std::string::npos)
      << r.out;

  // --- The list's shard, 00000: every record in list order with its status and message.
  const std::string over = "larger than the size limit of " + std::to_string(kMaxImageBytes) + " bytes";
  const std::string robots = "Use of image disallowed by X-Robots-Tag directive (noai)";
  const std::string not_an_image =
      ": unsupported_format: not an image (unknown signature; supported: JPEG, PNG, WebP)";
  auto key_error = [&](int line, const std::string& shown, const std::string& what) {
    return list + ":" + std::to_string(line) + ": key '" + shown + "' cannot name a sample: " + what;
  };
  const std::string dot = "key contains '.' (webdataset cuts keys at the first dot)";
  const std::vector<Expected> list_want{
      {"good_a", "success", ""},
      {"dev_zero", "failed_to_download", "/dev/zero: not a regular file (character device)"},
      {"dev_null", "failed_to_download", "/dev/null: not a regular file (character device)"},
      {"good_b", "success", ""},
      {"fifo", "failed_to_download", data + "/fifo: not a regular file (FIFO)"},
      {"directory", "failed_to_download", data + "/subdir: not a regular file (directory)"},
      {"good_c", "success", ""},
      {"sparse", "failed_to_download",
       data + "/sparse.jpg: too_large: 73400320 bytes, " + over + " (--max-image-bytes)"},
      {"secret", "failed_to_decode", "secret.txt" + not_an_image},
      {"good_d", "success", ""},
      {"fake_png", "failed_to_decode", "fake.png: corrupt: PNG: unregistered chunk: invalid chunk type"},
      {"../x", "failed_to_parse", key_error(12, "../x", dot)},
      {"a.b", "failed_to_parse", key_error(13, "a.b", dot)},
      {"", "failed_to_parse", key_error(14, "", "empty key")},
      {"ctl\\x01key", "failed_to_parse", key_error(15, "ctl\\x01key", "key contains a control character")},
      {"good_a", "failed_to_parse", list + ":16: key 'good_a' repeats the key of line 1 in this shard"},
      {"http_chunked", "failed_to_download", "too_large: body " + over},
      {"http_bomb", "failed_to_download", "too_large: body " + over},
      {"good_http", "success", ""},
      {"http_announced", "failed_to_download", "too_large: Content-Length 900000000, " + over},
      {"http_noai", "failed_to_download", robots},
      {"http_404", "failed_to_download", "HTTP 404"},
      {"good_e", "success", ""},
  };
  const auto list_side = read_jsonl(out + "/00000.jsonl");
  expect_records(list_side, list_want);
  // Bad keys are also warned about on stderr, control bytes shown escaped.
  for (size_t i = 11; i <= 15; ++i)
    EXPECT_NE(r.out.find("warning: malformed input: " + list_want[i].error), std::string::npos)
        << list_want[i].error << "\n"
        << r.out;
  auto list_stats = json::parse(io::read_file(out + "/00000_stats.json"));
  EXPECT_EQ(list_stats["count"], 23);
  EXPECT_EQ(list_stats["successes"], 6);
  EXPECT_EQ(list_stats["failed_to_download"], 10);
  EXPECT_EQ(list_stats["failed_to_decode"], 2);
  EXPECT_EQ(list_stats["failed_to_parse"], 5);
  // Final answers are never retried: one request each.
  for (auto p : {"/chunked.png", "/bomb.png", "/announced.png", "/noai.png", "/missing.png", "/good.png"})
    EXPECT_EQ(srv.hits(p), 1) << p;

  // Its tar: exactly the good samples, image bytes as read, caption = json; each sample's
  // members together (image, txt, json). List shards are written as samples finish (only tar
  // inputs keep their order, docs/CAPTION.md), so the samples' order is not asserted.
  std::vector<std::string> list_order;
  auto list_tar = read_tar(out + "/00000.tar", &list_order);
  const std::vector<std::pair<std::string, std::string>> list_good{
      {"good_a.jpg", good_local.at("img/a.jpg")},
      {"good_b.png", good_local.at("img/b.png")},
      {"good_c.jpg", good_local.at("img/c.jpg")},
      {"good_d.png", good_local.at("img/d.png")},
      {"good_http.png", http_png},
      {"good_e.jpg", good_local.at("img/e.jpg")}};
  std::vector<std::string> want_order;
  for (auto& [name, bytes] : list_good) {
    const std::string key = name.substr(0, name.find('.'));
    want_order.insert(want_order.end(), {name, key + ".txt", key + ".json"});
    EXPECT_EQ(list_tar[name], bytes) << name;
    auto meta = json::parse(list_tar[key + ".json"]);
    EXPECT_EQ(meta["status"], "success") << key;
    EXPECT_EQ(meta["key"], key);
    EXPECT_EQ(list_tar[key + ".txt"], meta["re_caption"].get<std::string>()) << key;
  }
  ASSERT_EQ(list_order.size(), want_order.size());
  std::vector<std::vector<std::string>> got_samples, want_samples;
  for (size_t i = 0; i + 2 < list_order.size(); i += 3) {
    got_samples.push_back({list_order[i], list_order[i + 1], list_order[i + 2]});
    want_samples.push_back({want_order[i], want_order[i + 1], want_order[i + 2]});
  }
  std::sort(got_samples.begin(), got_samples.end());
  std::sort(want_samples.begin(), want_samples.end());
  EXPECT_EQ(got_samples, want_samples) << ::testing::PrintToString(list_order);

  // --- Tar A's shard: done, the hostile members recorded, the good samples captioned.
  const std::string at = tar_a + ": offset ";
  const std::vector<Expected> a_want{
      {"a1", "success", ""},
      {"../evil", "failed_to_parse", at + std::to_string(evil_at) + ": bad key '../evil': " + dot},
      {"a2", "success", ""},
      {"", "failed_to_parse", at + std::to_string(empty_at) + ": bad key '': empty key"},
      {"a3", "success", ""},
      {"a2", "failed_to_parse",
       at + std::to_string(a2_again_at) + ": duplicate key 'a2' (its first sample is at offset " +
           std::to_string(a2_at) + "); this later sample is not written"},
      {"noimg", "failed_to_parse", tar_a + ": sample noimg has no image member (found: txt, json)"},
      {"a4", "success", ""},
  };
  const auto a_side = read_jsonl(out + "/mixA.jsonl");
  expect_records(a_side, a_want);
  auto a_stats = json::parse(io::read_file(out + "/mixA_stats.json"));
  EXPECT_EQ(a_stats["count"], 8);
  EXPECT_EQ(a_stats["successes"], 4);
  EXPECT_EQ(a_stats["failed_to_parse"], 4);
  std::vector<std::string> a_order;
  auto a_tar = read_tar(out + "/mixA.tar", &a_order);
  EXPECT_EQ(a_order,
            (std::vector<std::string>{"a1.jpg", "a1.txt", "a1.json", "a2.png", "a2.cls", "a2.txt", "a2.json",
                                      "a3.jpg", "a3.txt", "a3.json", "a4.png", "a4.txt", "a4.json"}));
  EXPECT_EQ(a_tar["a1.jpg"], a1);
  EXPECT_EQ(a_tar["a2.png"], a2);
  EXPECT_EQ(a_tar["a3.jpg"], a3);
  EXPECT_EQ(a_tar["a4.png"], a4);
  EXPECT_EQ(a_tar["a2.cls"], "2");
  EXPECT_EQ(json::parse(a_tar["a1.json"])["org_caption"], "orig a1");

  // --- Tar B's shard: failed, not published; its two good samples are captioned and kept.
  EXPECT_FALSE(io::file_exists(out + "/mixB_stats.json"));
  EXPECT_FALSE(io::file_exists(out + "/mixB.tar"));
  const std::string b_log = out + "/.mixB.log.partial", b_tar = out + "/.mixB.tar.partial";
  expect_records(partial_log_samples(b_log), {{"b1", "success", ""}, {"b2", "success", ""}});
  std::vector<std::string> b_order;
  auto b_members = read_tar(b_tar, &b_order);
  EXPECT_EQ(b_order,
            (std::vector<std::string>{"b1.jpg", "b1.txt", "b1.json", "b2.png", "b2.txt", "b2.json"}));
  EXPECT_EQ(b_members["b1.jpg"], b1);
  EXPECT_EQ(b_members["b2.png"], b2);

  // --- Nothing escapes, nothing leaks, nothing changed.
  const auto out_files = files_under(out);
  for (auto& f : out_files) {
    const std::string bytes = io::read_file(f);
    EXPECT_EQ(bytes.find(kSecret), std::string::npos) << "the secret is in " << f;
    EXPECT_EQ(bytes.find("root:x:0:0"), std::string::npos) << "the secret file's bytes are in " << f;
    if (f.size() > 4 && (f.substr(f.size() - 4) == ".tar" || f.substr(f.size() - 12) == ".tar.partial")) {
      std::vector<std::string> names;
      read_tar(f, &names);
      for (auto& n : names) {
        EXPECT_EQ(n.find(".."), std::string::npos) << f << ": " << n;
        EXPECT_NE(n.front(), '/') << f << ": " << n;
      }
    }
  }
  EXPECT_EQ(r.out.find(kSecret), std::string::npos) << "the secret is in the log";
  EXPECT_EQ(r.out.find("root:x:0:0"), std::string::npos) << "the secret file's bytes are in the log";
  EXPECT_EQ(snapshot_inputs(data), inputs_before);
  EXPECT_EQ(snapshot_inputs(shards), shards_before);

  // --- The same command again: the done shards are skipped, tar B's shard resumes after its
  // two samples and fails at the same member (exit 1 again); nothing is written twice.
  std::map<std::string, std::string> done_bytes;
  for (auto name :
       {"00000.tar", "00000.jsonl", "00000_stats.json", "mixA.tar", "mixA.jsonl", "mixA_stats.json"})
    done_bytes[name] = io::read_file(out + "/" + name);
  auto again = caption_under_ulimit(args);
  ASSERT_NE(again.rc, 124) << "the rerun did not end within " << kGuardSeconds << " s\n" << again.out;
  EXPECT_EQ(again.rc, 1) << again.out;
  EXPECT_NE(again.out.find("shard mixB: resuming, 2 sample(s) already done"), std::string::npos) << again.out;
  EXPECT_NE(again.out.find("shard mixB: error: " + tar_b + ": offset " + std::to_string(huge_at)),
            std::string::npos)
      << again.out;
  EXPECT_NE(again.out.find("shard 00000: already done, skipped"), std::string::npos) << again.out;
  EXPECT_NE(again.out.find("shard mixA: already done, skipped"), std::string::npos) << again.out;
  EXPECT_NE(
      again.out.find("caption: finished: 0 shard(s) done, 2 skipped, 1 failed, 0 busy; 0 samples (0 ok, "
                     "0 failed)"),
      std::string::npos)
      << again.out;
  for (auto& [name, bytes] : done_bytes) EXPECT_EQ(io::read_file(out + "/" + name), bytes) << name;
  EXPECT_EQ(key_status(partial_log_samples(b_log)),
            (std::vector<std::pair<std::string, std::string>>{{"b1", "success"}, {"b2", "success"}}));
  std::vector<std::string> b_order_again;
  read_tar(b_tar, &b_order_again);
  EXPECT_EQ(b_order_again, b_order);
  // Every captioned key exactly once across all outputs: one image, one .txt, one .json.
  std::map<std::string, int> members_per_key;
  for (auto& tar : {out + "/00000.tar", out + "/mixA.tar", b_tar}) {
    std::vector<std::string> names;
    read_tar(tar, &names);
    for (auto& n : names)
      if (n.size() > 5 && (n.substr(n.size() - 4) == ".txt" || n.substr(n.size() - 5) == ".json"))
        ++members_per_key[n];
  }
  for (auto& [name, n] : members_per_key) EXPECT_EQ(n, 1) << name;
  EXPECT_EQ(members_per_key.size(), 2u * (6 + 4 + 2));
  EXPECT_EQ(again.out.find(kSecret), std::string::npos);
  EXPECT_EQ(snapshot_inputs(data), inputs_before);
  EXPECT_EQ(snapshot_inputs(shards), shards_before);
}

// The fix the run above needed (io/image.cpp): libpng names the chunk an error is in by its
// 4-byte type as read from the file; for a type that is not a registered PNG chunk name those
// are content bytes, and they are replaced. Registered names (IHDR, ...) are kept.
TEST(HostileMixCli, PngChunkErrorsNeverEchoContentBytes) {
  const std::string sig("\x89PNG\r\n\x1a\n", 8);
  auto message_of = [](const std::string& bytes) {
    try {
      io::decode_image(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    } catch (const io::ImageError& e) {
      return std::string(e.what());
    }
    return std::string("decoded");
  };
  // Chunk type " SEC" (a space, then letters) and "Leak" (letters only).
  EXPECT_EQ(message_of(sig + "junk " + kSecret), "PNG: unregistered chunk: invalid chunk type");
  const std::string leak = message_of(sig + std::string("\0\0\0\x0d", 4) + "Leak" + kSecret);
  EXPECT_EQ(leak, "PNG: unregistered chunk: CRC error");
  // A real PNG whose IHDR checksum is broken keeps the registered name.
  std::string png = make_png(8, 8, 3);
  png[29] = static_cast<char>(png[29] ^ 0x55);  // the IHDR CRC: 8 signature + 8 + 13 data bytes
  EXPECT_EQ(message_of(png), "PNG: IHDR: CRC error");
}

// libjpeg fills some messages with bytes of the file ("Unsupported marker type 0x53" for an 'S'
// after the SOI): every parameter is shown as '?', the message text stays libjpeg's.
TEST(HostileMixCli, JpegErrorsNeverEchoContentBytes) {
  auto message_of = [](const std::string& bytes) {
    try {
      io::decode_image(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    } catch (const io::ImageError& e) {
      return std::string(e.what());
    }
    return std::string("decoded");
  };
  const std::string msg = message_of(std::string("\xff\xd8\xff", 3) + kSecret + std::string(64, 'S'));
  EXPECT_NE(msg.find("Unsupported marker type 0x?"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("0x53"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("SEC"), std::string::npos) << msg;
}
