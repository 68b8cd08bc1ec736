// SHA-256 through OpenSSL's libcrypto (EVP): the image hash of the sidecar (img2dataset's
// compute_hash="sha256") and the tokenizer identity printed at start.
#pragma once
#include <string>
#include <string_view>

namespace recap::io {

// Lower-case hex SHA-256 of `data`, as Python's hashlib.sha256(data).hexdigest().
std::string sha256_hex(std::string_view data);
// The same over a file's bytes, streamed in 64 KiB chunks. Throws IoError naming the file.
std::string file_sha256(const std::string& path);

}  // namespace recap::io
