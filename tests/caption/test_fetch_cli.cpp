// recap-engine caption on the tiny model, fetching images the way lists name them: local
// files bounded before they are read (devices, FIFOs, directories, a sparse 70 MiB file), the
// --local-root confinement, a text file with a secret that must reach no output and no log,
// HTTP bodies bounded while they stream, X-Robots-Tag and the User-Agent, and the
// img2dataset sidecar fields sha256 and exif. Each run is a child process with RLIMIT_AS
// 2 GiB and a time limit: a run that reads /dev/zero whole or blocks on a FIFO fails here.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "../io_lists/exif_fixture.h"
#include "../io_lists/loopback_http.h"
#include "cli_util.h"
#include "io/lists.h"

using nlohmann::json;
using namespace recap::testing;
namespace io = recap::io;

namespace {

const std::string kData = RECAP_TEST_DATA;
const std::string kWeights = kData + "/tiny/llava_orig_with_vt_fp32";
const std::string kTokenizer = std::string(RECAP_SOURCE_DIR) + "/examples/demo/tokenizer.json";
const std::string kImages = kData + "/tiny/images";
// A string that stands for a secret in a file a list names by mistake (or on purpose).
const std::string kSecret = "SECRET-7f3a9c1e-do-not-leak";

struct LimitedRun {
  int rc = -1;         // exit code; -1 when killed at the time limit
  std::string output;  // stdout + stderr
};

// Runs recap-engine caption in a child with RLIMIT_AS = 2 GiB, stdout+stderr to a file, and
// kills it after `limit_s` seconds (a guard against hangs, not a timing assertion).
LimitedRun run_caption_limited(const std::vector<std::string>& extra, const std::string& log_path,
                               double limit_s = 240) {
  std::vector<std::string> args{RECAP_BIN,          "caption",  "--weights",      kWeights,
                                "--tokenizer",      kTokenizer, "--log-interval", "1000",
                                "--max-new-tokens", "6",        "--threads",      "1",
                                "--io-workers",     "2"};
  args.insert(args.end(), extra.begin(), extra.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  LimitedRun r;
  const pid_t pid = ::fork();
  if (pid == 0) {
    struct rlimit lim {};
    lim.rlim_cur = lim.rlim_max = 2ull << 30;
    ::setrlimit(RLIMIT_AS, &lim);
    const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::setenv("MALLOC_ARENA_MAX", "2", 1);  // virtual-memory arenas would eat the 2 GiB
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  int st = 0;
  const bool done = wait_until([&] { return ::waitpid(pid, &st, WNOHANG) == pid; }, limit_s);
  if (!done) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &st, 0);
  } else {
    r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
  r.output = io::read_file(log_path);
  return r;
}

std::string list_of(const std::vector<std::string>& urls) {
  std::string text;
  for (size_t i = 0; i < urls.size(); ++i) {
    // Appended piece by piece: g++ 12 warns (-Wrestrict, a false positive) on "c" + string&&.
    std::string caption = "c";
    caption += std::to_string(i);
    text += json{{"url", urls[i]}, {"caption", caption}}.dump();
    text += "\n";
  }
  return text;
}

// Every regular file under `dir`, recursively.
void files_under(const std::string& dir, std::vector<std::string>* out) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) return;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    const std::string p = dir + "/" + name;
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0) continue;
    if (S_ISDIR(st.st_mode))
      files_under(p, out);
    else if (S_ISREG(st.st_mode))
      out->push_back(p);
  }
  ::closedir(d);
}

void expect_secret_nowhere(const std::string& out_dir, const std::string& log) {
  EXPECT_EQ(log.find(kSecret), std::string::npos) << "secret in the log";
  EXPECT_EQ(log.find("root:x:0:0"), std::string::npos) << "secret file's first bytes in the log";
  std::vector<std::string> files;
  files_under(out_dir, &files);
  EXPECT_FALSE(files.empty());
  for (auto& f : files) {
    const std::string data = io::read_file(f);
    EXPECT_EQ(data.find(kSecret), std::string::npos) << f;
    EXPECT_EQ(data.find("root:x:0:0"), std::string::npos) << f;
    EXPECT_EQ(data.find("72 6f 6f 74"), std::string::npos) << f;  // not even in hex
  }
}

std::string engine_version() {
  auto v = run_cmd({RECAP_BIN, "--version"});
  std::string s = v.out;
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s.substr(s.find(' ') + 1);
}

std::string sha256sum(const std::string& path) {
  auto r = run_cmd({"sha256sum", path});
  return r.out.substr(0, 64);
}

// A tree as users have it: images and a list in root/, plus everything a list should never
// make the engine read whole, block on or echo.
struct LocalTree {
  std::string dir, root;
  explicit LocalTree(const char* tag) {
    dir = make_temp_dir(tag);
    root = dir + "/root";
    io::make_dirs(root + "/img");
    io::make_dirs(root + "/subdir");
    for (auto n : {"gray_square.jpg", "wide_gradient.png"})
      io::atomic_write(root + "/img/" + n, io::read_file(kImages + "/" + n));
    io::atomic_write(root + "/secret.txt", "root:x:0:0:" + kSecret + ":/root:/bin/bash\n");
    EXPECT_EQ(::mkfifo((root + "/fifo").c_str(), 0600), 0);
    { io::OutFile f(root + "/sparse.jpg", io::OutFile::Mode::Truncate); }
    EXPECT_EQ(::truncate((root + "/sparse.jpg").c_str(), 70ll << 20), 0);  // 70 MiB, no blocks
    io::atomic_write(dir + "/outside.png", io::read_file(kImages + "/small_wide.png"));
    EXPECT_EQ(::symlink((dir + "/outside.png").c_str(), (root + "/link_out.png").c_str()), 0);
    EXPECT_EQ(::symlink((root + "/img/wide_gradient.png").c_str(), (root + "/link_in.png").c_str()), 0);
  }
  std::vector<std::string> urls() const {
    return {"img/gray_square.jpg",
            "/dev/zero",
            "fifo",
            "subdir",
            "sparse.jpg",
            "/dev/null",
            "secret.txt",
            "file://" + dir + "/outside.png",
            "link_out.png",
            "link_in.png",
            "img/wide_gradient.png"};
  }
};

void expect_sample(const std::vector<json>& side, size_t i, const std::string& status,
                   const std::string& error) {
  SCOPED_TRACE(side[i].dump());
  EXPECT_EQ(side[i]["key"], io::compute_key(static_cast<int64_t>(i), 0, 10000));
  EXPECT_EQ(side[i]["status"], status);
  if (error.empty())
    EXPECT_TRUE(side[i]["error_message"].is_null());
  else
    EXPECT_EQ(side[i]["error_message"], error);
}

}  // namespace

// Default (no --local-root): any path, but regular files only, each bounded before it is read.
TEST(FetchCli, LocalFilesAreBoundedAndNeverEchoed) {
  LocalTree t("fetch_local");
  const auto urls = t.urls();
  io::atomic_write(t.root + "/l.jsonl", list_of(urls));
  const std::string out = t.dir + "/out";
  auto r = run_caption_limited({"--list", t.root + "/l.jsonl", "--out", out}, t.dir + "/log.txt");
  ASSERT_EQ(r.rc, 0) << r.output;
  auto side = read_jsonl(out + "/00000.jsonl");
  ASSERT_EQ(side.size(), urls.size());
  const std::string& R = t.root;
  expect_sample(side, 0, "success", "");
  expect_sample(side, 1, "failed_to_download", "/dev/zero: not a regular file (character device)");
  expect_sample(side, 2, "failed_to_download", R + "/fifo: not a regular file (FIFO)");
  expect_sample(side, 3, "failed_to_download", R + "/subdir: not a regular file (directory)");
  expect_sample(side, 4, "failed_to_download",
                R + "/sparse.jpg: too_large: 73400320 bytes, larger than the size limit of 67108864 bytes "
                    "(--max-image-bytes)");
  expect_sample(side, 5, "failed_to_download", "/dev/null: not a regular file (character device)");
  expect_sample(
      side, 6, "failed_to_decode",
      "secret.txt: unsupported_format: not an image (unknown signature; supported: JPEG, PNG, WebP)");
  expect_sample(side, 7, "success", "");  // no confinement by default
  expect_sample(side, 8, "success", "");
  expect_sample(side, 9, "success", "");
  expect_sample(side, 10, "success", "");
  auto stats = json::parse(io::read_file(out + "/00000_stats.json"));
  EXPECT_EQ(stats["successes"], 5);
  EXPECT_EQ(stats["failed_to_download"], 5);
  EXPECT_EQ(stats["failed_to_decode"], 1);
  auto tar = read_tar(out + "/00000.tar");
  EXPECT_EQ(tar.size(), 15u);  // 5 successes x (image, txt, json)
  expect_secret_nowhere(out, r.output);
  // Inputs are untouched.
  EXPECT_EQ(io::read_file(R + "/secret.txt"), "root:x:0:0:" + kSecret + ":/root:/bin/bash\n");
  struct stat st {};
  ASSERT_EQ(::stat((R + "/sparse.jpg").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 70ll << 20);
}

// --local-root DIR: every local path must resolve (symlinks followed) inside DIR.
TEST(FetchCli, LocalRootConfinesPathsAndFileUrls) {
  LocalTree t("fetch_root");
  const auto urls = t.urls();
  io::atomic_write(t.root + "/l.jsonl", list_of(urls));
  const std::string out = t.dir + "/out";
  auto r = run_caption_limited({"--list", t.root + "/l.jsonl", "--out", out, "--local-root", t.root},
                               t.dir + "/log.txt");
  ASSERT_EQ(r.rc, 0) << r.output;
  auto side = read_jsonl(out + "/00000.jsonl");
  ASSERT_EQ(side.size(), urls.size());
  char* real = ::realpath(t.root.c_str(), nullptr);
  const std::string R(real);
  ::free(real);
  const std::string outside = ": outside --local-root " + R;
  expect_sample(side, 0, "success", "");
  expect_sample(side, 1, "failed_to_download", "/dev/zero" + outside);
  expect_sample(side, 2, "failed_to_download", R + "/fifo: not a regular file (FIFO)");
  expect_sample(side, 3, "failed_to_download", R + "/subdir: not a regular file (directory)");
  expect_sample(side, 4, "failed_to_download",
                R + "/sparse.jpg: too_large: 73400320 bytes, larger than the size limit of 67108864 bytes "
                    "(--max-image-bytes)");
  expect_sample(side, 5, "failed_to_download", "/dev/null" + outside);
  expect_sample(
      side, 6, "failed_to_decode",
      "secret.txt: unsupported_format: not an image (unknown signature; supported: JPEG, PNG, WebP)");
  expect_sample(side, 7, "failed_to_download", t.dir + "/outside.png" + outside);
  expect_sample(side, 8, "failed_to_download", t.root + "/link_out.png" + outside);
  expect_sample(side, 9, "success", "");  // a link that stays inside is fine
  expect_sample(side, 10, "success", "");
  expect_secret_nowhere(out, r.output);

  // A root that does not exist is a usage error (exit 2) naming it.
  auto bad = run_cmd({RECAP_BIN, "caption", "--weights", kWeights, "--list", t.root + "/l.jsonl", "--out",
                      t.dir + "/out2", "--local-root", t.dir + "/nope"});
  EXPECT_EQ(bad.rc, 2) << bad.out;
  EXPECT_NE(bad.out.find("--local-root: Directory does not exist: " + t.dir + "/nope"), std::string::npos)
      << bad.out;
}

// HTTP through the loopback server: bodies bounded while they stream, X-Robots-Tag, and the
// User-Agent the server saw.
TEST(FetchCli, HttpLimitsRobotsAndUserAgent) {
  LoopbackHttpServer srv;
  ASSERT_TRUE(srv.ok());
  const std::string png = io::read_file(kImages + "/wide_gradient.png");
  auto route = [&](std::vector<std::string> headers) {
    LoopbackHttpServer::Route r{200, png, 0, 0};
    r.headers = std::move(headers);
    return r;
  };
  srv.set("/ok.png", route({}));
  srv.set("/noai.png", route({"X-Robots-Tag: noai"}));
  srv.set("/ours.png", route({"X-Robots-Tag: recap-engine: noindex"}));
  srv.set("/other.png", route({"X-Robots-Tag: otherbot: noai"}));
  LoopbackHttpServer::Route chunked{200, std::string(3 << 20, 'x'), 0, 0};
  chunked.chunked = true;
  srv.set("/chunked.png", chunked);
  LoopbackHttpServer::Route bomb{200, gzip(std::string(64 << 20, '\0')), 0, 0};
  bomb.headers = {"Content-Encoding: gzip"};
  srv.set("/bomb.png", bomb);
  LoopbackHttpServer::Route announced{200, "tiny", 0, 0};
  announced.content_length = 900000000;
  srv.set("/announced.png", announced);
  const std::vector<std::string> urls{srv.url("/ok.png"),       srv.url("/noai.png"),    srv.url("/ours.png"),
                                      srv.url("/other.png"),    srv.url("/chunked.png"), srv.url("/bomb.png"),
                                      srv.url("/announced.png")};
  const std::string dir = make_temp_dir("fetch_http");
  io::atomic_write(dir + "/l.jsonl", list_of(urls));
  auto r = run_caption_limited({"--list", dir + "/l.jsonl", "--out", dir + "/out", "--max-image-bytes",
                                "1000000", "--http-retries", "2", "--http-timeout", "20"},
                               dir + "/log.txt");
  ASSERT_EQ(r.rc, 0) << r.output;
  auto side = read_jsonl(dir + "/out/00000.jsonl");
  ASSERT_EQ(side.size(), urls.size());
  const std::string robots = "Use of image disallowed by X-Robots-Tag directive";
  const std::string over = "larger than the size limit of 1000000 bytes";
  expect_sample(side, 0, "success", "");
  expect_sample(side, 1, "failed_to_download", robots + " (noai)");
  expect_sample(side, 2, "failed_to_download", robots + " (noindex)");
  expect_sample(side, 3, "success", "");
  expect_sample(side, 4, "failed_to_download", "too_large: body " + over);
  expect_sample(side, 5, "failed_to_download", "too_large: body " + over);
  expect_sample(side, 6, "failed_to_download", "too_large: Content-Length 900000000, " + over);
  // Final answers: one request each, no retry.
  for (auto p : {"/noai.png", "/ours.png", "/chunked.png", "/bomb.png", "/announced.png"})
    EXPECT_EQ(srv.hits(p), 1) << p;
  EXPECT_EQ(srv.user_agent("/ok.png"), "recap-engine/" + engine_version() +
                                           " (image recaptioning; opt out with X-Robots-Tag: noai or "
                                           "X-Robots-Tag: recap-engine: noai)");

  // --disallowed-header-directives '' ignores the header, as img2dataset's empty list does.
  auto r2 = run_caption_limited({"--list", dir + "/l.jsonl", "--out", dir + "/out2", "--max-image-bytes",
                                 "1000000", "--disallowed-header-directives", ""},
                                dir + "/log2.txt");
  ASSERT_EQ(r2.rc, 0) << r2.output;
  auto side2 = read_jsonl(dir + "/out2/00000.jsonl");
  ASSERT_EQ(side2.size(), urls.size());
  expect_sample(side2, 1, "success", "");
  expect_sample(side2, 2, "success", "");
}

// img2dataset's sha256 (hex of the image bytes) and exif (json.dumps of exifread's tags) in
// the sidecar and the tar's json; a PNG gets sha256 only; values already in the input record
// are kept.
TEST(FetchCli, Sha256AndExifSidecarFields) {
  const std::string dir = make_temp_dir("fetch_sha");
  const std::string jpeg = jpeg_with_exif(io::read_file(kImages + "/gray_square.jpg"), sample_exif_tiff());
  io::atomic_write(dir + "/exif.jpg", jpeg);
  io::atomic_write(dir + "/plain.jpg", io::read_file(kImages + "/gray_square.jpg"));
  io::atomic_write(dir + "/img.png", io::read_file(kImages + "/small_wide.png"));
  std::string list =
      json{{"url", "exif.jpg"}, {"caption", "with exif"}}.dump() + "\n" +
      json{{"url", "img.png"}, {"caption", "png"}}.dump() + "\n" +
      json{{"url", "plain.jpg"}, {"caption", "no exif"}}.dump() + "\n" +
      json{{"url", "exif.jpg"}, {"caption", "given"}, {"sha256", "given-hash"}, {"exif", "{\"a\": 1}"}}
          .dump() +
      "\n" + json{{"url", "missing.jpg"}, {"caption", "gone"}}.dump() + "\n";
  io::atomic_write(dir + "/l.jsonl", list);
  auto r = run_caption_limited({"--list", dir + "/l.jsonl", "--out", dir + "/out"}, dir + "/log.txt");
  ASSERT_EQ(r.rc, 0) << r.output;
  auto side = read_jsonl(dir + "/out/00000.jsonl");
  ASSERT_EQ(side.size(), 5u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(side[i]["status"], "success") << side[i].dump();
  const std::string jpeg_sha = sha256sum(dir + "/exif.jpg");
  ASSERT_EQ(jpeg_sha.size(), 64u);
  EXPECT_EQ(side[0]["sha256"], jpeg_sha);
  EXPECT_EQ(side[0]["exif"], kExpectedExifJson);
  EXPECT_EQ(side[1]["sha256"], sha256sum(dir + "/img.png"));
  EXPECT_FALSE(side[1].contains("exif")) << side[1].dump();
  EXPECT_EQ(side[2]["sha256"], sha256sum(dir + "/plain.jpg"));
  EXPECT_EQ(side[2]["exif"], "{}");  // exifread finds no EXIF: img2dataset writes "{}"
  EXPECT_EQ(side[3]["sha256"], "given-hash");
  EXPECT_EQ(side[3]["exif"], "{\"a\": 1}");
  EXPECT_FALSE(side[4].contains("sha256"));  // failures get neither
  EXPECT_FALSE(side[4].contains("exif"));
  // The tar's {key}.json is the same record; the stored image is the hashed bytes.
  auto tar = read_tar(dir + "/out/00000.tar");
  const std::string key0 = io::compute_key(0, 0, 10000);
  EXPECT_EQ(json::parse(tar[key0 + ".json"]), side[0]);
  EXPECT_EQ(tar[key0 + ".jpg"], jpeg);
}
