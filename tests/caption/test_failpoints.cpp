// RECAP_FAILPOINTS (engine/failpoints.h): what a value arms, the usage error of a bad one, and
// the armed batch counted once across threads. The variable is read once per process, so the
// tests that arm it run in death-test children (a fresh process each).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "engine/errors.h"
#include "engine/failpoints.h"

namespace en = recap::engine;

namespace {

// The UsageError message parse_failpoints gives for `value` ("" when it parses).
std::string usage_error_of(const std::string& value) {
  try {
    en::parse_failpoints(value);
  } catch (const en::UsageError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Failpoints, ParsesTheVisionTowerBatch) {
  EXPECT_EQ(en::parse_failpoints("").vision_tower_batch, 0);
  EXPECT_EQ(en::parse_failpoints("vision_tower_batch:1").vision_tower_batch, 1);
  EXPECT_EQ(en::parse_failpoints("vision_tower_batch:2").vision_tower_batch, 2);
  EXPECT_EQ(en::parse_failpoints("vision_tower_batch:123456789012").vision_tower_batch, 123456789012);
}

TEST(Failpoints, UnknownNameIsAUsageErrorNamingTheVariable) {
  EXPECT_EQ(usage_error_of("vision_tower:2"),
            "RECAP_FAILPOINTS=\"vision_tower:2\": unknown failpoint \"vision_tower\" (known: "
            "vision_tower_batch:N)");
  EXPECT_EQ(usage_error_of("decode_step:1"),
            "RECAP_FAILPOINTS=\"decode_step:1\": unknown failpoint \"decode_step\" (known: "
            "vision_tower_batch:N)");
  EXPECT_EQ(
      usage_error_of("vision_tower_batch:2,"),
      "RECAP_FAILPOINTS=\"vision_tower_batch:2,\": unknown failpoint \"\" (known: vision_tower_batch:N)");
  EXPECT_EQ(
      usage_error_of("vision_tower_batch:1,vision_tower_batch:2"),
      "RECAP_FAILPOINTS=\"vision_tower_batch:1,vision_tower_batch:2\": vision_tower_batch is given twice");
}

TEST(Failpoints, BadNumberIsAUsageErrorNamingTheVariable) {
  for (const std::string number :
       {"", "0", "-1", "+2", " 2", "2 ", "2x", "x", "1.5", "99999999999999999999"}) {
    SCOPED_TRACE(number);
    const std::string value = "vision_tower_batch:" + number;
    EXPECT_EQ(usage_error_of(value), "RECAP_FAILPOINTS=\"" + value +
                                         "\": vision_tower_batch needs a batch number >= 1 "
                                         "(vision_tower_batch:N), not \"" +
                                         number + "\"");
  }
  EXPECT_EQ(usage_error_of("vision_tower_batch"),
            "RECAP_FAILPOINTS=\"vision_tower_batch\": vision_tower_batch needs a batch number >= 1 "
            "(vision_tower_batch:N), not \"\"");
}

// Unset: check_failpoints passes and no batch ever throws.
TEST(FailpointsDeathTest, UnsetArmsNothing) {
  EXPECT_EXIT(
      {
        unsetenv("RECAP_FAILPOINTS");
        en::check_failpoints();
        for (int i = 0; i < 100; ++i) en::failpoint_vision_tower_batch();
        std::exit(0);
      },
      ::testing::ExitedWithCode(0), "");
}

// Armed for batch 3: of 4 threads x 25 calls, exactly one call throws, with the failpoint's
// message (the count is one atomic counter for every thread).
TEST(FailpointsDeathTest, ArmedBatchThrowsOnceAcrossThreads) {
  EXPECT_EXIT(
      {
        setenv("RECAP_FAILPOINTS", "vision_tower_batch:3", 1);
        en::check_failpoints();
        std::atomic<int> thrown{0};
        std::vector<std::thread> threads;
        for (int t = 0; t < 4; ++t)
          threads.emplace_back([&] {
            for (int i = 0; i < 25; ++i) {
              try {
                en::failpoint_vision_tower_batch();
              } catch (const std::runtime_error& e) {
                if (std::string(e.what()) == "failpoint vision_tower_batch:3") ++thrown;
              }
            }
          });
        for (auto& th : threads) th.join();
        std::fprintf(stderr, "thrown %d\n", thrown.load());
        std::exit(thrown.load() == 1 ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "thrown 1");
}

// The first batch is number 1.
TEST(FailpointsDeathTest, BatchNumbersStartAtOne) {
  EXPECT_EXIT(
      {
        setenv("RECAP_FAILPOINTS", "vision_tower_batch:1", 1);
        try {
          en::failpoint_vision_tower_batch();
        } catch (const std::runtime_error& e) {
          std::fprintf(stderr, "%s\n", e.what());
          std::exit(0);
        }
        std::exit(1);
      },
      ::testing::ExitedWithCode(0), "failpoint vision_tower_batch:1");
}

// A malformed value read in the process is reported by every check, not only the first.
TEST(FailpointsDeathTest, MalformedValueIsReportedByEveryCheck) {
  EXPECT_EXIT(
      {
        setenv("RECAP_FAILPOINTS", "vision_tower_batch:zero", 1);
        int errors = 0;
        for (int i = 0; i < 2; ++i) {
          try {
            en::check_failpoints();
          } catch (const en::UsageError&) {
            ++errors;
          }
        }
        try {
          en::failpoint_vision_tower_batch();
        } catch (const en::UsageError& e) {
          ++errors;
          std::fprintf(stderr, "%s\n", e.what());
        }
        std::exit(errors == 3 ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "RECAP_FAILPOINTS=\"vision_tower_batch:zero\": vision_tower_batch needs");
}
