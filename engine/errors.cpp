#include "engine/errors.h"

#include "engine/eval_quant.h"
#include "engine/shard_assign.h"
#include "engine/sources.h"
#include "io/lists.h"
#include "io/safetensors.h"
#include "models/config.h"
#include "models/tokenizer.h"

namespace recap::engine {

bool is_usage_error(const std::exception& e) {
  return dynamic_cast<const UsageError*>(&e) || dynamic_cast<const models::ConfigError*>(&e) ||
         dynamic_cast<const models::TokenizerError*>(&e) || dynamic_cast<const io::FormatError*>(&e) ||
         dynamic_cast<const io::ListError*>(&e) || dynamic_cast<const AssignmentError*>(&e) ||
         dynamic_cast<const InputError*>(&e) || dynamic_cast<const EvalQuantError*>(&e);
}

ExitCode exit_code_for(const std::exception& e) {
  if (dynamic_cast<const InterruptedError*>(&e)) return ExitCode::kInterrupted;
  if (is_usage_error(e)) return ExitCode::kUsage;
  return ExitCode::kRuntime;
}

}  // namespace recap::engine
