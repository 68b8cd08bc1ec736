// Sample keys. A key becomes the stem of tar member names ({key}.jpg, {key}.txt, ...) and of
// files when a shard is extracted, and webdataset groups members back into samples by the part
// of the basename before its first dot. So a key is accepted only if it is a portable file-name
// stem:
//   - non-empty, at most kMaxKeyBytes bytes;
//   - no '/', '\\' (path separators: a key must not name a folder or escape one);
//   - no '.' (webdataset would cut the key at the first dot and split the sample);
//   - no NUL or other control character (bytes < 0x20 and 0x7f).
// Everything else, including non-ASCII UTF-8, spaces and '-', is kept as written.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace recap::io {

inline constexpr size_t kMaxKeyBytes = 200;

// "" when `key` is acceptable, else what is wrong with it ("empty key", "key contains '/'"...),
// fit for a per-sample error message. Never echoes control bytes back.
std::string key_problem(std::string_view key);

// `key` with control and non-printable ASCII bytes shown as \xNN, cut to 80 bytes: safe to
// print in a message or store in a sidecar.
std::string printable_key(std::string_view key);

}  // namespace recap::io
