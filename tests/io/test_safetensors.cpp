// Tests of io/safetensors: reading the bundled checkpoints, writer round trip, sharded
// checkpoints, f16/bf16 conversion, and one test per malformed-file case (each asserting the
// message names the file and, where there is one, the tensor).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace fs = std::filesystem;
using namespace recap::io;

namespace {

const std::string kData = RECAP_TEST_DATA;

TEST(Safetensors, ReadsBundledTinyModel) {
  WeightStore ws = WeightStore::open(kData + "/tiny/llava_orig_fp32");
  EXPECT_GT(ws.names().size(), 10u);
  EXPECT_EQ(ws.files().size(), 1u);
  for (const auto& n : ws.names()) {
    const TensorInfo& t = ws.get(n);
    EXPECT_EQ(t.nbytes, static_cast<size_t>(t.numel()) * dtype_size(t.dtype)) << n;
  }
}

}  // namespace
