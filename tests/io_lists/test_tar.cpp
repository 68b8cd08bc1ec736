// io/tar: members written by us are read back by us, GNU tar and Python's tarfile; GNU
// long names (written by GNU tar) and pax names are read; corrupt archives are refused;
// hostile headers (untrustworthy pax lengths, sizes beyond the file) end in bounded time and
// memory with a TarError naming file and offset; compressed tars read like plain ones.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>

#include "io/fileutil.h"
#include "io/tar.h"

using namespace recap::io;

namespace {
std::string temp_dir() {
  char tmpl[] = "/tmp/recap_tar_XXXXXX";
  return std::string(::mkdtemp(tmpl));
}
std::string run(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int rc = pclose(p);
  if (rc != 0) out += "\n[exit " + std::to_string(rc) + "]";
  return out;
}
std::string long_name(size_t n, char c) {
  return std::string(n, c);
}
}  // namespace

TEST(Tar, RoundTripWithLongAndUnicodeNames) {
  auto dir = temp_dir();
  std::string longflat = long_name(150, 'k') + ".json";            // > 100, no slash: pax
  std::string longdir = long_name(120, 'd') + "/" + "000001.txt";  // ustar prefix split
  std::string uni = "caf\xc3\xa9_000002.txt";                      // non-ASCII: pax
  std::string binary(1000, '\0');
  for (size_t i = 0; i < binary.size(); ++i) binary[i] = static_cast<char>(i * 7);
  std::string tar = tar_member_bytes("000000.jpg", binary, 1700000000) + tar_member_bytes(longflat, "{}", 0) +
                    tar_member_bytes(longdir, "caption", 0) + tar_member_bytes(uni, "", 0) +
                    tar_member_bytes("x/exact512.txt", std::string(512, 'z'), 0) + tar_end_bytes();
  EXPECT_EQ(tar.size() % 512, 0u);
  atomic_write(dir + "/t.tar", tar);

  TarReader r(dir + "/t.tar");
  std::vector<TarMember> ms;
  TarMember m;
  while (r.next(&m)) ms.push_back(m);
  ASSERT_EQ(ms.size(), 5u);
  EXPECT_EQ(ms[0].name, "000000.jpg");
  EXPECT_EQ(ms[0].data, binary);
  EXPECT_EQ(ms[0].offset, 0u);
  EXPECT_EQ(ms[1].name, longflat);
  EXPECT_EQ(ms[2].name, longdir);
  EXPECT_EQ(ms[2].data, "caption");
  EXPECT_EQ(ms[3].name, uni);
  EXPECT_EQ(ms[3].data, "");
  EXPECT_EQ(ms[4].data.size(), 512u);

  // GNU tar lists every name and extracts identical bytes.
  std::string list = run("tar -tf " + dir + "/t.tar");
  EXPECT_NE(list.find("000000.jpg\n"), std::string::npos) << list;
  EXPECT_NE(list.find(longflat + "\n"), std::string::npos) << list;
  EXPECT_NE(list.find(longdir + "\n"), std::string::npos) << list;
  EXPECT_EQ(list.find("[exit"), std::string::npos) << list;
  std::string x = run("mkdir -p " + dir + "/x && tar -xf " + dir + "/t.tar -C " + dir + "/x && cmp " + dir +
                      "/x/000000.jpg - < /dev/null; echo");
  EXPECT_EQ(read_file(dir + "/x/000000.jpg"), binary);
  EXPECT_EQ(read_file(dir + "/x/" + longdir), "caption");

  // Python's tarfile reads the same names and sizes.
  std::string py =
      run("python3 -c \"import tarfile,sys; t=tarfile.open(sys.argv[1]); "
          "print('|'.join(m.name+':'+str(m.size) for m in t.getmembers()))\" " +
          dir + "/t.tar");
  EXPECT_NE(py.find("000000.jpg:1000|" + longflat + ":2|" + longdir + ":7|" + uni + ":0|x/exact512.txt:512"),
            std::string::npos)
      << py;
}

TEST(Tar, ReadsGnuLongNamesAndPythonPax) {
  auto dir = temp_dir();
  std::string ln = long_name(130, 'g') + ".txt";
  atomic_write(dir + "/src_" + ln, "gnu");
  run("cd " + dir + " && tar --format=gnu -cf gnu.tar src_" + ln);
  TarReader r(dir + "/gnu.tar");
  TarMember m;
  ASSERT_TRUE(r.next(&m));
  EXPECT_EQ(m.name, "src_" + ln);
  EXPECT_EQ(m.data, "gnu");
  EXPECT_FALSE(r.next(&m));

  run("cd " + dir +
      " && python3 -c \"import tarfile,io; t=tarfile.open('pax.tar','w',format=tarfile.PAX_FORMAT); "
      "d=b'pax'; i=tarfile.TarInfo('p'*200+'.json'); i.size=3; t.addfile(i, io.BytesIO(d)); t.close()\"");
  TarReader p(dir + "/pax.tar");
  ASSERT_TRUE(p.next(&m));
  EXPECT_EQ(m.name, std::string(200, 'p') + ".json");
  EXPECT_EQ(m.data, "pax");
}

TEST(Tar, CorruptAndTruncatedArchivesThrow) {
  auto dir = temp_dir();
  std::string good = tar_member_bytes("a.txt", std::string(700, 'a'), 0) + tar_end_bytes();
  atomic_write(dir + "/trunc.tar", good.substr(0, 900));
  TarReader t(dir + "/trunc.tar");
  TarMember m;
  EXPECT_THROW(t.next(&m), TarError);

  std::string bad = good;
  bad[0] = 'b';  // checksum no longer matches
  atomic_write(dir + "/bad.tar", bad);
  TarReader b(dir + "/bad.tar");
  try {
    b.next(&m);
    FAIL();
  } catch (const TarError& e) {
    EXPECT_NE(std::string(e.what()).find("checksum"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("bad.tar"), std::string::npos);
  }
  atomic_write(dir + "/text.tar", std::string(1024, 'x'));
  TarReader x(dir + "/text.tar");
  EXPECT_THROW(x.next(&m), TarError);
  EXPECT_THROW(TarReader(dir + "/missing.tar"), TarError);
}

TEST(Tar, WebdatasetNames) {
  std::string k, e;
  split_wds_name("dir.v1/000123.seg.jpg", &k, &e);
  EXPECT_EQ(k, "dir.v1/000123");
  EXPECT_EQ(e, "seg.jpg");
  split_wds_name("noext", &k, &e);
  EXPECT_EQ(k, "noext");
  EXPECT_EQ(e, "");
}

// ---------------------------------------------------------------- hostile and compressed tars

namespace {

// A ustar header for `name` declaring `size` bytes of type `type` (no data follows).
std::string header(const std::string& name, uint64_t size, char type = '0') {
  std::string h = tar_member_bytes(name, "", 0);  // one 512-byte block
  h[156] = type;
  char num[16];
  std::snprintf(num, sizeof num, "%011llo", static_cast<unsigned long long>(size));
  std::memcpy(&h[124], num, 11);
  std::memset(&h[148], ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : h) sum += c;
  std::snprintf(num, sizeof num, "%06o", sum);
  std::memcpy(&h[148], num, 6);
  h[154] = '\0';
  return h;
}

std::string padded(std::string s) {
  s.append((512 - s.size() % 512) % 512, '\0');
  return s;
}

// A pax extended header holding `records` verbatim, then a member "a.txt" with "hello".
std::string pax_then_member(const std::string& records) {
  return header("PaxHeaders/a.txt", records.size(), 'x') + padded(records) +
         tar_member_bytes("a.txt", "hello", 0) + tar_end_bytes();
}

struct Bounded {
  int rc = -1;          // child exit code, 128 + signal when killed (SIGALRM: the time limit)
  std::string message;  // what the child reported
};

// Reads every member of `path` in a child process limited to `seconds` of wall time (alarm)
// and, except under AddressSanitizer (which reserves terabytes of address space), 1 GiB of
// address space. Exit 0: read to the end; 3: TarError (message = what()); 4: out of memory.
Bounded read_all_bounded(const std::string& path, int seconds = 20) {
  int fds[2];
  if (::pipe(fds) != 0) return {};
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    ::alarm(static_cast<unsigned>(seconds));
#if !defined(__SANITIZE_ADDRESS__)
    struct rlimit lim {
      1ull << 30, 1ull << 30
    };
    ::setrlimit(RLIMIT_AS, &lim);
#endif
    std::string msg;
    int code = 0;
    try {
      TarReader r(path);
      TarMember m;
      while (r.next(&m)) msg += m.name + ":" + std::to_string(m.data.size()) + " ";
    } catch (const TarError& e) {
      msg = e.what();
      code = 3;
    } catch (const std::bad_alloc&) {
      code = 4;
    }
    if (::write(fds[1], msg.data(), msg.size()) < 0) code = 5;
    ::_exit(code);
  }
  ::close(fds[1]);
  Bounded b;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof buf)) > 0) b.message.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  int st = 0;
  ::waitpid(pid, &st, 0);
  b.rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return b;
}

}  // namespace

TEST(TarHostile, PaxRecordLengthsThatCannotBeTrustedAreErrorsNotLoops) {
  auto dir = temp_dir();
  // Sanity: a well-formed record renames the member.
  atomic_write(dir + "/ok.tar", pax_then_member("15 path=b.json\n"));
  auto ok = read_all_bounded(dir + "/ok.tar");
  EXPECT_EQ(ok.rc, 0) << ok.message;
  EXPECT_EQ(ok.message, "b.json:5 ");

  struct Case {
    const char* file;
    std::string records;
    std::string expect;
  };
  const std::vector<Case> cases{
      {"negative.tar", "-5 path=x\n", "its length is not a decimal number"},
      {"overflow.tar", "99999999999999999999999 path=x\n", "its length is not a decimal number"},
      {"overflow64.tar", "18446744073709551615 path=x\n", "runs past the header's"},
      {"zero.tar", "0 path=x\n", "length 0 is too small"},
      {"past_end.tar", "50 path=x\n", "length 50 runs past the header's 10 bytes"},
      {"no_newline.tar", "10 path=xyz", "it does not end with a newline"},
      {"bad_size.tar", "12 size=-12\n", "size '-12' is not a size"},
  };
  for (auto& c : cases) {
    atomic_write(dir + "/" + c.file, pax_then_member(c.records));
    auto b = read_all_bounded(dir + "/" + c.file);
    EXPECT_EQ(b.rc, 3) << c.file << ": " << b.message;
    EXPECT_EQ(b.message.find(dir + "/" + c.file + ": offset 0: malformed pax record at byte 0: "), 0u)
        << b.message;
    EXPECT_NE(b.message.find(c.expect), std::string::npos) << b.message;
  }
}

TEST(TarHostile, DeclaredSizesBeyondTheFileAreRefusedBeforeAllocating) {
  auto dir = temp_dir();
  // 512 bytes declaring a 4 GiB member: refused at once (1 GiB address space in the child).
  atomic_write(dir + "/huge.tar", header("k.jpg", 4ull << 30));
  auto b = read_all_bounded(dir + "/huge.tar");
  EXPECT_EQ(b.rc, 3) << b.message;
  EXPECT_EQ(b.message, dir +
                           "/huge.tar: offset 0: member 'k.jpg' declares 4294967296 bytes but the file has " +
                           "0 left (truncated or corrupt tar)");
  // The same behind a good member: the offset names the bad header.
  atomic_write(dir + "/huge2.tar",
               tar_member_bytes("a.txt", "aa", 0) + header("b.npy", 4ull << 30) + std::string(512, '\0'));
  b = read_all_bounded(dir + "/huge2.tar");
  EXPECT_EQ(b.rc, 3) << b.message;
  EXPECT_EQ(b.message.find(dir + "/huge2.tar: offset 1024: member 'b.npy' declares 4294967296 bytes"), 0u)
      << b.message;
  // A pax header of 2 GiB, a GNU long name of 1 MiB: over their fixed limits.
  atomic_write(dir + "/bigpax.tar", header("PaxHeaders/x", 2ull << 30, 'x'));
  b = read_all_bounded(dir + "/bigpax.tar");
  EXPECT_EQ(b.rc, 3) << b.message;
  EXPECT_EQ(b.message, dir + "/bigpax.tar: offset 0: pax header of 2147483648 bytes (at most 1048576)");
  atomic_write(dir + "/biglong.tar", header("././@LongLink", 1 << 20, 'L') + std::string(1 << 20, 'n'));
  b = read_all_bounded(dir + "/biglong.tar");
  EXPECT_EQ(b.rc, 3) << b.message;
  EXPECT_EQ(b.message, dir + "/biglong.tar: offset 0: GNU long name of 1048576 bytes (at most 65536)");
}

TEST(TarHostile, EmptyAndNulNamesAreReadAsIsAndNeverWritten) {
  // Found by fuzz_tar: the reader yields them (the caption pipeline fails such a sample on its
  // key and goes on), the writer refuses them (a ustar or pax name would be cut at the NUL).
  auto dir = temp_dir();
  std::string h = header("x", 0);
  std::memset(&h[0], 0, 100);
  std::memset(&h[148], ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : h) sum += c;
  char num[16];
  std::snprintf(num, sizeof num, "%06o", sum);
  std::memcpy(&h[148], num, 6);
  h[154] = '\0';
  atomic_write(dir + "/empty.tar", tar_member_bytes("a.txt", "aa", 0) + h + tar_end_bytes());
  auto b = read_all_bounded(dir + "/empty.tar");
  EXPECT_EQ(b.rc, 0) << b.message;
  EXPECT_EQ(b.message, "a.txt:2 :0 ");
  atomic_write(dir + "/nulpax.tar", pax_then_member(std::string("14 path=ab\0cd\n", 14)));
  b = read_all_bounded(dir + "/nulpax.tar");
  EXPECT_EQ(b.rc, 0) << b.message;
  EXPECT_EQ(b.message, std::string("ab\0cd:5 ", 8));
  EXPECT_THROW(tar_member_bytes("", "x", 0), TarError);
  EXPECT_THROW(tar_member_bytes(std::string("ab\0cd", 5), "x", 0), TarError);
}

TEST(TarHostile, TruncatedMemberNamesFileAndOffset) {
  auto dir = temp_dir();
  std::string good =
      tar_member_bytes("a.txt", "aa", 0) + tar_member_bytes("b.jpg", std::string(3000, 'b'), 0);
  atomic_write(dir + "/cut.tar", good.substr(0, 512 * 2 + 512 + 1000));  // b.jpg's data cut at 1000
  // Header-level check: 3000 declared, 1000 present.
  auto b = read_all_bounded(dir + "/cut.tar");
  EXPECT_EQ(b.rc, 3) << b.message;
  EXPECT_EQ(b.message,
            dir + "/cut.tar: offset 1024: member 'b.jpg' declares 3000 bytes but the file has 1000 " +
                "left (truncated or corrupt tar)");
  // The first member was readable before the error.
  TarReader r(dir + "/cut.tar");
  TarMember m;
  ASSERT_TRUE(r.next(&m));
  EXPECT_EQ(m.data, "aa");
  EXPECT_THROW(r.next(&m), TarError);
  // Cut inside a header block.
  atomic_write(dir + "/cuthdr.tar", good.substr(0, 1024 + 100));
  b = read_all_bounded(dir + "/cuthdr.tar");
  EXPECT_EQ(b.rc, 3) << b.message;
  EXPECT_EQ(b.message, dir + "/cuthdr.tar: offset 1024: truncated tar header");
}

TEST(TarHostile, HugeSparseMemberIsSkippedBySeekingNotReading) {
  // A real 5 GiB member (a sparse file: no disk used) between two small ones: next_entry()
  // reports it, skip_data() seeks over it, the member after it is read. In a child limited to
  // 1 GiB of address space and 20 s.
  auto dir = temp_dir();
  const uint64_t big = 5ull << 30;
  std::string head = tar_member_bytes("a.txt", "first", 0) + header("big.npy", big);
  std::string tail = tar_member_bytes("c.txt", "after", 0) + tar_end_bytes();
  {
    FILE* f = std::fopen((dir + "/sparse.tar").c_str(), "wb");
    ASSERT_NE(f, nullptr);
    ASSERT_EQ(std::fwrite(head.data(), 1, head.size(), f), head.size());
    ASSERT_EQ(::fseeko(f, static_cast<off_t>(head.size() + big), SEEK_SET), 0);
    ASSERT_EQ(std::fwrite(tail.data(), 1, tail.size(), f), tail.size());
    std::fclose(f);
  }
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::alarm(20);
#if !defined(__SANITIZE_ADDRESS__)
    struct rlimit lim {
      1ull << 30, 1ull << 30
    };
    ::setrlimit(RLIMIT_AS, &lim);
#endif
    std::string out;
    try {
      TarReader r(dir + "/sparse.tar");
      TarEntry e;
      while (r.next_entry(&e)) {
        out += e.name + "@" + std::to_string(e.offset) + ":" + std::to_string(e.size);
        if (e.size < 1000) {
          std::string d;
          r.read_data(&d);
          out += "=" + d;
        }
        out += " ";
      }
    } catch (const std::exception& e) {
      out = std::string("error: ") + e.what();
    }
    if (::write(fds[1], out.data(), out.size()) < 0) ::_exit(5);
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string got;
  char buf[512];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof buf)) > 0) got.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  int st = 0;
  ::waitpid(pid, &st, 0);
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0) << st;
  EXPECT_EQ(got, "a.txt@0:5=first big.npy@1024:" + std::to_string(big) + " c.txt@" +
                     std::to_string(1536 + big) + ":5=after ");
}

TEST(TarCompressed, GzipXzZstdBzip2ReadLikePlainAndCorruptionNamesTheFile) {
  auto dir = temp_dir();
  std::string binary(5000, '\0');
  for (size_t i = 0; i < binary.size(); ++i) binary[i] = static_cast<char>(i * 13 + 1);
  std::string plain = tar_member_bytes("k1.jpg", binary, 0) +
                      tar_member_bytes(std::string(150, 'L') + ".txt", "x", 0) +
                      tar_member_bytes("k1.txt", "cap", 0) + tar_end_bytes();
  atomic_write(dir + "/t.tar", plain);
  for (const char* tool : {"gzip", "xz", "zstd -q", "bzip2"}) {
    std::string out = run(std::string(tool) + " -c " + dir + "/t.tar > " + dir + "/t.c");
    ASSERT_EQ(out.find("[exit"), std::string::npos) << tool << out;
    TarReader r(dir + "/t.c");
    EXPECT_TRUE(r.compressed()) << tool;
    std::vector<TarMember> ms;
    TarMember m;
    while (r.next(&m)) ms.push_back(m);
    ASSERT_EQ(ms.size(), 3u) << tool;
    EXPECT_EQ(ms[0].name, "k1.jpg");
    EXPECT_EQ(ms[0].data, binary);
    EXPECT_EQ(ms[1].name, std::string(150, 'L') + ".txt");
    EXPECT_EQ(ms[2].data, "cap");
  }
  // Damaged deflate data and a cut gzip stream: TarError naming the file, in bounded time.
  std::string gz = run("gzip -c " + dir + "/t.tar");
  ASSERT_GT(gz.size(), 200u);
  std::string bad = gz;
  for (size_t i = 30; i < 90; ++i) bad[i] = static_cast<char>(bad[i] ^ 0x5a);
  atomic_write(dir + "/bad.tar.gz", bad);
  auto b = read_all_bounded(dir + "/bad.tar.gz");
  EXPECT_EQ(b.rc, 3) << b.message;
  EXPECT_EQ(b.message.find(dir + "/bad.tar.gz: "), 0u) << b.message;
  atomic_write(dir + "/cut.tgz", gz.substr(0, gz.size() / 2));
  b = read_all_bounded(dir + "/cut.tgz");
  EXPECT_EQ(b.rc, 3) << b.message;
  EXPECT_EQ(b.message.find(dir + "/cut.tgz: "), 0u) << b.message;
  // A 4 GiB declared member inside a gzip stream: the data is read in chunks as it arrives,
  // so the missing bytes end it as a truncated member, not a 4 GiB allocation.
  atomic_write(dir + "/huge.tar",
               tar_member_bytes("a.txt", "a", 0) + header("k.jpg", 4ull << 30) + std::string(4096, 'z'));
  run("gzip -c " + dir + "/huge.tar > " + dir + "/huge.tar.gz");
  TarReader hz(dir + "/huge.tar.gz");
  TarEntry e;
  ASSERT_TRUE(hz.next_entry(&e));
  ASSERT_TRUE(hz.next_entry(&e));
  EXPECT_EQ(e.size, 4ull << 30);
  std::string data;
  try {
    hz.read_data(&data);
    FAIL();
  } catch (const TarError& err) {
    EXPECT_EQ(std::string(err.what()),
              dir + "/huge.tar.gz: offset 1024 of the decompressed tar: tar truncated in member 'k.jpg'");
  }
  EXPECT_LE(data.size(), 4096u + 512u);
}
