// img2dataset's `exif` sidecar field for JPEG images, computed without Python: img2dataset
// stores json.dumps({k: str(v).strip() for k, v in exifread.process_file(f, details=False)
// .items() if v is not None}) (exifread-nocycle 3.0). This reader walks the EXIF APP1 segment's
// TIFF structure the way exifread does and formats each value as exifread's IfdTag.printable:
//   - keys "<IFD> <TagName>": IFD0 "Image", IFD1 "Thumbnail", further chained IFDs "IFD <n>",
//     the EXIF sub-IFD "EXIF" (from Image ExifOffset, after the chain), "GPS" (from GPSInfo) and
//     "Interoperability" (from InteroperabilityOffset) dumped when their pointer tag is met,
//     before the pointer tag itself; unknown tags "Tag 0x%04X"; MakerNote and UserComment
//     skipped (details=False).
//   - ASCII: the text up to the first NUL (UTF-8; invalid UTF-8 shown as Python's bytes repr).
//   - one value: str(value); several: Python's list repr "[1, 2]"; more than 50 values: the
//     first 20 and ", ... ]"; 1000 or more (not ASCII): "[]". Rationals reduced like Python's
//     Fraction ("72", "1/200", "5/0" when the denominator is 0).
//   - value tables for the common enumerated tags (Orientation, ResolutionUnit, Flash, ...) and
//     make_string for ExifVersion / FlashPixVersion ("0230").
//   - the output text is Python's json.dumps (", " / ": " separators, ensure_ascii escapes).
// Differences from exifread (documented in docs/CAPTION.md): a value that points outside the
// EXIF segment reads as 0 / is cut at the segment end (exifread reads on into the file, or
// fails so img2dataset writes null); IEEE float values use the shortest round-trip digits; the
// value tables cover the tags listed in exif.cpp (others print their numbers).
// Safe on hostile input: every offset and count is checked against the segment, IFDs are
// visited at most once (cycles end), at most kMaxExifTags tags are read.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace recap::io {

constexpr size_t kMaxExifTags = 4096;

// The `exif` text for a JPEG's bytes: "{}" when there is no EXIF APP1 segment (as exifread
// returns {} then). Never throws on malformed data.
std::string exif_json_from_jpeg(const uint8_t* data, size_t size);

// The same for a bare TIFF/EXIF block (starting at "II*\0" / "MM\0*"), for tests and tools.
std::string exif_json_from_tiff(const uint8_t* data, size_t size);

// Python's json.dumps of a str (ensure_ascii=True), quotes included. `utf8` is decoded as
// UTF-8; invalid bytes are shown as U+FFFD.
std::string python_json_string(const std::string& utf8);

}  // namespace recap::io
