// io/tar: the input read as an archive (TarReader); every member it yields is written back with
// tar_member_bytes and read again, and must come back with the same name and bytes. A second
// round trip uses a member built from the input itself (name = bytes up to the first NUL-free
// newline, data = the rest). Documented errors: io::TarError.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "fuzz_util.h"
#include "io/tar.h"

namespace {

std::vector<recap::io::TarMember> read_all(const std::string& path) {
  recap::io::TarReader r(path);
  std::vector<recap::io::TarMember> out;
  recap::io::TarMember m;
  while (r.next(&m)) out.push_back(m);
  return out;
}

// What tar_member_bytes refuses (documented: an empty name, a NUL in the name); the reader
// yields such names as they are, and the caption pipeline fails their samples on the key.
bool writable_name(const std::string& name) {
  return !name.empty() && name.find('\0') == std::string::npos;
}

void round_trip(std::vector<recap::io::TarMember> members, const std::string& path) {
  members.erase(std::remove_if(members.begin(), members.end(),
                               [](const recap::io::TarMember& m) {
                                 if (writable_name(m.name)) return false;
                                 // Refused, never written wrong.
                                 try {
                                   (void)recap::io::tar_member_bytes(m.name, m.data, 0);
                                 } catch (const recap::io::TarError&) {
                                   return true;
                                 }
                                 __builtin_trap();
                               }),
                members.end());
  std::string archive;
  for (const auto& m : members) archive += recap::io::tar_member_bytes(m.name, m.data, 1700000000);
  archive += recap::io::tar_end_bytes();
  recap::fuzz::write_file(path, archive);
  const std::vector<recap::io::TarMember> back = read_all(path);  // a TarError here is a finding
  if (back.size() != members.size()) __builtin_trap();
  for (size_t i = 0; i < back.size(); ++i)
    if (back[i].name != members[i].name || back[i].data != members[i].data) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace recap;
  const std::string_view in = fuzz::as_view(data, size);
  const std::string path = fuzz::scratch_dir() + "/in.tar";
  fuzz::write_file(path, in);
  std::vector<io::TarMember> members;
  try {
    members = read_all(path);
  } catch (const io::TarError&) {
    members.clear();
  }
  round_trip(members, fuzz::scratch_dir() + "/out.tar");

  // A member of our own making: any non-empty name without NUL (what the writer accepts).
  const size_t nl = in.find('\n');
  if (nl != std::string_view::npos && nl > 0) {
    const std::string name(in.substr(0, nl));
    if (name.find('\0') == std::string::npos) {
      io::TarMember m;
      m.name = name;
      m.data = std::string(in.substr(nl + 1));
      round_trip({m}, fuzz::scratch_dir() + "/own.tar");
    }
  }
  return 0;
}
