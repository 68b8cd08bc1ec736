// recap-engine merge-stats: one summary over every shard of a caption output directory, so a
// user sees what finished and what to resubmit (engine/merge_stats.h).
//
// The expected shards come from the inputs when --list/--input are given (with the same
// --samples-per-shard, column and --shards flags as the caption job), else from the run plan
// caption wrote (OUT/_recap_plan.json), else from the directory. Exit codes:
//   0  every expected shard is done (holds exactly the samples its plan says);
//   1  some are not: incomplete (fewer samples than planned, or another layout), partial,
//      missing (planned, no outputs), corrupt, or the directory holds no shard output at all;
//      also a runtime failure (the --todo-file cannot be written);
//   2  usage error (no such directory, unreadable inputs or run plan).
#include <cstdio>

#include "engine/errors.h"
#include "engine/merge_stats.h"
#include "engine/run_plan.h"
#include "engine/shard_assign.h"
#include "engine/sources.h"
#include "io/fileutil.h"
#include "tools/cli.h"

namespace recap::cli {
namespace {

struct MergeFlags {
  std::string out_dir;
  std::vector<std::string> lists, inputs;
  io::ListColumns columns;
  int64_t samples_per_shard = 10000;
  std::string shards, shards_file, todo_file;
  bool json = false;
};

int run_merge_stats(const MergeFlags& f) {
  std::vector<engine::PlannedShard> expected;
  if (!f.lists.empty() || !f.inputs.empty()) {
    engine::InputOptions in;
    in.lists = f.lists;
    in.tars = f.inputs;
    in.columns = f.columns;
    in.samples_per_shard = f.samples_per_shard;
    std::vector<std::string> warnings, names;
    // The inputs and shard selection the user named: any failure to read them is usage (2).
    engine::as_usage_error("", [&] {
      const std::vector<engine::ShardSpec> specs = engine::plan_shards(in, &warnings);
      for (auto& s : specs) names.push_back(s.name);
      engine::ShardSelection sel;
      if (!f.shards.empty()) sel = engine::parse_shard_selection(f.shards);
      if (!f.shards_file.empty())
        sel = engine::merge_selections(sel, engine::read_shard_selection_file(f.shards_file));
      for (int64_t p : engine::selected_positions(sel, names)) {
        const auto& s = specs[static_cast<size_t>(p)];
        expected.push_back({s.name, s.n_records, engine::shard_plan_entry(s, f.samples_per_shard)});
      }
    });
    for (auto& w : warnings) std::fprintf(stderr, "recap-engine merge-stats: warning: %s\n", w.c_str());
  } else if (!f.shards.empty() || !f.shards_file.empty()) {
    throw engine::UsageError("--shards/--shards-file select among the inputs: pass --list or --input too");
  }
  // A missing output directory or an unreadable run plan is usage (2), from engine/merge_stats.
  const engine::MergeSummary m = engine::merge_shard_stats(f.out_dir, expected);
  if (m.shards.empty()) {
    // Nothing to summarize is "not done" (1), as before the first worker wrote anything.
    std::fprintf(stderr,
                 "recap-engine merge-stats: %s holds no shard outputs (pass --list/--input to list the "
                 "expected shards)\n",
                 f.out_dir.c_str());
    return exit_status(ExitCode::kRuntime);
  }
  if (!f.todo_file.empty()) {
    std::string text;
    for (auto& n : m.not_done()) text += n + "\n";
    io::atomic_write(f.todo_file, text);  // io::IoError: a runtime failure (1)
  }
  if (f.json)
    write_report(m.to_json().dump(2) + "\n");
  else
    write_report(m.to_text());
  // Not every shard done is the documented outcome 1, not an error: the summary says which.
  return exit_status(m.all_done() ? ExitCode::kOk : ExitCode::kRuntime);
}

CommandRegistrar reg_merge_stats(
    "merge-stats",
    "Summarize every shard of a caption output directory: done, partial, missing, failures, images/hour "
    "(exit 0 only when all are done)",
    [](CLI::App* sub) -> std::function<int()> {
      auto f = std::make_shared<MergeFlags>();
      sub->add_option("--out", f->out_dir, "the caption job's output directory")->required();
      sub->add_flag("--json", f->json, "print the summary as one JSON object");
      sub->add_option("--list", f->lists, "the caption job's --list (expected shards come from the inputs)");
      sub->add_option("--input", f->inputs, "the caption job's --input tars");
      sub->add_option("--samples-per-shard", f->samples_per_shard, "as given to caption")
          ->capture_default_str();
      sub->add_option("--url-col", f->columns.url, "as given to caption")->capture_default_str();
      sub->add_option("--caption-col", f->columns.caption, "as given to caption")->capture_default_str();
      sub->add_option("--key-col", f->columns.key, "as given to caption")->capture_default_str();
      sub->add_flag("--strict-columns", f->columns.strict, "as given to caption");
      sub->add_option("--shards", f->shards, "only these shards of the inputs (as caption --shards)");
      sub->add_option("--shards-file", f->shards_file, "only the shards named in FILE (as caption)");
      sub->add_option(
          "--todo-file", f->todo_file,
          "write the names of the shards not done here, one per line (for caption --shards-file)");
      return [f]() { return run_merge_stats(*f); };
    });

}  // namespace
}  // namespace recap::cli
