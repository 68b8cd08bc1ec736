// io/lists brace patterns ("shards/{00000..00099}.tar", "{a,b}"): count_braces and
// expand_braces on arbitrary text must agree (both refuse, or as many names as counted).
// Documented errors: io::ListError (unbalanced braces, too many names).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "io/lists.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace recap;
  const std::string pattern(fuzz::as_view(data, size));
  // The count is checked against the names for patterns of up to 4096 names; larger ones (up
  // to the 1,000,000 limit, which the unit tests cover) are only counted, so that every run
  // stays fast and the fuzzer explores the parser instead of allocating millions of names.
  size_t n = 0;
  try {
    n = io::count_braces(pattern);
  } catch (const io::ListError&) {
    try {
      (void)io::expand_braces(pattern);
    } catch (const io::ListError&) {
      return 0;  // both refuse it
    }
    __builtin_trap();  // counted as an error, expanded fine
  }
  if (n > 4096) return 0;
  const std::vector<std::string> names = io::expand_braces(pattern);  // a ListError here is a finding
  if (names.size() != n) __builtin_trap();
  return 0;
}
