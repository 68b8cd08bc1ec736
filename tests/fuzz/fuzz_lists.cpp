// io/lists: a sample list file read by path; the first byte picks the name (.jsonl, .tsv, .csv,
// .txt, each also with .gz; gzip itself is detected from the magic bytes whatever the name).
// Also checks a TSV/CSV header line through check_list_header. Documented errors:
// io::ListError (per-line problems are records with `error`, not exceptions).
#include <cstddef>
#include <cstdint>

#include "fuzz_util.h"
#include "io/lists.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace recap;
  std::string_view in = fuzz::as_view(data, size);
  const uint8_t sel = fuzz::take_selector(&in);
  static const char* const kNames[] = {"l.jsonl",    "l.tsv",    "l.csv",   "l.txt",
                                       "l.jsonl.gz", "l.tsv.gz", "l.csv.gz"};
  const std::string path = fuzz::scratch_dir() + "/" + kNames[sel % 7];
  fuzz::write_file(path, in);
  io::ListColumns columns;
  columns.strict = (sel & 0x80) != 0;
  try {
    io::ListFile list = io::read_list_file(path, columns);
    // The pipeline writes columns with invalid UTF-8 replaced (U+FFFD), as here.
    for (const io::ListRecord& r : list.records)
      (void)r.extra.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
  } catch (const io::ListError&) {
  }
  const std::string first_line(in.substr(0, in.find('\n')));
  for (io::ListFormat f : {io::ListFormat::Tsv, io::ListFormat::Csv}) {
    try {
      (void)io::check_list_header(f, first_line, columns, "fuzz:1: ");
    } catch (const io::ListError&) {
    }
  }
  return 0;
}
