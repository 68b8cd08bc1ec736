// caption_cpp: captions image files with the recap C++ wrapper (recap/recap.hpp).
//   caption_cpp <weights_dir> <tokenizer.json> <image>...
// Prints one line per image, "<key>\t<caption>", in batch order. Exit status 0 when every image
// got a non-empty caption, 1 otherwise, 2 on a usage or load error.
#include <cstdio>
#include <iostream>
#include <recap/recap.hpp>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 4) {
    std::cerr << "usage: " << argv[0] << " <weights_dir> <tokenizer.json> <image>...\n";
    return 2;
  }
  std::cout << "# recap " << recap::version() << "\n";
  try {
    recap::ModelParams mp;
    mp.weights_dir = argv[1];
    mp.tokenizer_path = argv[2];
    recap::Model model(mp);

    std::vector<recap::Image> images;
    for (int i = 3; i < argc; ++i) images.push_back(recap::Image::from_file(argv[i]));

    recap::CaptionParams cp;
    cp.max_new_tokens = 24;
    cp.max_batch = 4;
    auto results = model.caption(
        images, cp,
        [](const recap::Result& r) {
          std::cerr << (r.ok() ? "finished " : "failed ") << r.key << (r.ok() ? "" : ": " + r.error) << "\n";
          return true;  // false would cancel the rest of the batch
        },
        [](size_t done, size_t total) { std::cerr << "progress " << done << "/" << total << "\n"; });
    int rc = 0;
    for (const auto& r : results) {
      if (!r.ok() || r.caption.empty()) rc = 1;
      std::cout << r.key << "\t" << r.caption << "\n";
    }
    return rc;
  } catch (const recap::Error& e) {
    std::cerr << "error (" << recap_status_string(e.status()) << "): " << e.what() << "\n";
    return 2;
  }
}
