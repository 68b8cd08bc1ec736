// io/tar: members written by us are read back by us, GNU tar and Python's tarfile; GNU
// long names (written by GNU tar) and pax names are read; corrupt archives are refused.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
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
