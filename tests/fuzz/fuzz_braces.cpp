// io/lists brace patterns ("shards/{00000..00099}.tar", "{a,b}"): expand_braces on arbitrary
// text. Documented errors: io::ListError (unbalanced braces, too many names). Glob expansion is
// being added beside it; this stays a thin call so it can follow the API.
#include <cstddef>
#include <cstdint>

#include "fuzz_util.h"
#include "io/lists.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace recap;
  try {
    (void)io::expand_braces(std::string(fuzz::as_view(data, size)));
  } catch (const io::ListError&) {
  }
  return 0;
}
