// engine/errors: the one mapping from an exception to an exit code, for every error type the
// lower layers throw (README "Exit codes").
#include <gtest/gtest.h>

#include <new>
#include <stdexcept>

#include "engine/errors.h"
#include "engine/eval_quant.h"
#include "engine/shard_assign.h"
#include "engine/sources.h"
#include "io/fileutil.h"
#include "io/lists.h"
#include "io/safetensors.h"
#include "models/config.h"
#include "models/tokenizer.h"

namespace engine = recap::engine;
using engine::exit_code_for;
using engine::ExitCode;

TEST(ExitCodeFor, ConfigurationTypesAreTwo) {
  EXPECT_EQ(exit_code_for(engine::UsageError("x")), ExitCode::kUsage);
  EXPECT_EQ(exit_code_for(recap::models::ConfigError("x")), ExitCode::kUsage);
  EXPECT_EQ(exit_code_for(recap::models::TokenizerError("x")), ExitCode::kUsage);
  EXPECT_EQ(exit_code_for(recap::io::FormatError("x")), ExitCode::kUsage);
  EXPECT_EQ(exit_code_for(recap::io::ListError("x")), ExitCode::kUsage);
  EXPECT_EQ(exit_code_for(engine::AssignmentError("x")), ExitCode::kUsage);
  EXPECT_EQ(exit_code_for(engine::InputError("x")), ExitCode::kUsage);
  EXPECT_EQ(exit_code_for(engine::EvalQuantError("x")), ExitCode::kUsage);
  EXPECT_TRUE(engine::is_usage_error(recap::models::ConfigError("x")));
}

TEST(ExitCodeFor, InterruptedIsSeventyFiveAndEverythingElseIsOne) {
  EXPECT_EQ(exit_code_for(engine::InterruptedError("x")), ExitCode::kInterrupted);
  EXPECT_EQ(exit_code_for(std::runtime_error("x")), ExitCode::kRuntime);
  EXPECT_EQ(exit_code_for(std::invalid_argument("x")), ExitCode::kRuntime);
  EXPECT_EQ(exit_code_for(std::bad_alloc()), ExitCode::kRuntime);
  // An I/O error is a runtime failure unless the caller knows it is about configuration.
  EXPECT_EQ(exit_code_for(recap::io::IoError("x")), ExitCode::kRuntime);
  EXPECT_FALSE(engine::is_usage_error(recap::io::IoError("x")));
  EXPECT_EQ(static_cast<int>(ExitCode::kOk), 0);
  EXPECT_EQ(static_cast<int>(ExitCode::kRuntime), 1);
  EXPECT_EQ(static_cast<int>(ExitCode::kUsage), 2);
  EXPECT_EQ(static_cast<int>(ExitCode::kInterrupted), 75);
}

TEST(AsUsageError, TurnsUntypedErrorsIntoUsageAndKeepsTypedOnes) {
  try {
    engine::as_usage_error("--weights",
                           [] { throw recap::io::IoError("/m/model.safetensors: cannot open"); });
    FAIL() << "no exception";
  } catch (const engine::UsageError& e) {
    EXPECT_STREQ(e.what(), "--weights: /m/model.safetensors: cannot open");
  }
  try {
    engine::as_usage_error("", [] { throw std::runtime_error("plain"); });
    FAIL() << "no exception";
  } catch (const engine::UsageError& e) {
    EXPECT_STREQ(e.what(), "plain");
  }
  EXPECT_THROW(engine::as_usage_error("c", [] { throw engine::InterruptedError("stop"); }),
               engine::InterruptedError);
  EXPECT_THROW(engine::as_usage_error("c", [] { throw std::bad_alloc(); }), std::bad_alloc);
  EXPECT_EQ(engine::as_usage_error("c", [] { return 7; }), 7);
}
