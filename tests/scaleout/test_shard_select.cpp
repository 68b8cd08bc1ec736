// engine/shard_assign: resolution order of the worker assignment (flags, Slurm array, Slurm
// tasks, Kubernetes Indexed Job), the --shards selection syntax and its errors, and how a
// selection is strided over the workers.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "engine/shard_assign.h"
#include "io/fileutil.h"

using namespace recap::engine;

namespace {

EnvLookup env_of(std::map<std::string, std::string> vars) {
  return [vars](const std::string& k) -> std::optional<std::string> {
    auto it = vars.find(k);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

std::vector<std::string> numbered(int n) {
  std::vector<std::string> v;
  for (int i = 0; i < n; ++i) {
    std::string s = std::to_string(i);
    v.push_back(std::string(5 - s.size(), '0') + s);
  }
  return v;
}

std::string temp_file(const std::string& text) {
  char tmpl[] = "/tmp/recap_shardsel_XXXXXX";
  int fd = ::mkstemp(tmpl);
  ::close(fd);
  recap::io::atomic_write(tmpl, text);
  return tmpl;
}

}  // namespace

TEST(ShardAssign, ResolutionOrder) {
  const std::map<std::string, std::string> all{
      {"SLURM_ARRAY_TASK_ID", "12"}, {"SLURM_ARRAY_TASK_MIN", "10"}, {"SLURM_ARRAY_TASK_COUNT", "4"},
      {"SLURM_PROCID", "1"},         {"SLURM_NTASKS", "3"},          {"JOB_COMPLETION_INDEX", "5"}};
  auto a = resolve_shard_assignment(7, 9, env_of(all));
  EXPECT_EQ(a.index, 7);
  EXPECT_EQ(a.count, 9);
  EXPECT_EQ(a.source, "flags");

  a = resolve_shard_assignment(std::nullopt, std::nullopt, env_of(all));
  EXPECT_EQ(a.index, 2);  // 12 - 10
  EXPECT_EQ(a.count, 4);
  EXPECT_EQ(a.source, "SLURM_ARRAY_TASK_ID");
  EXPECT_EQ(a.describe(), "worker 2 of 4 (from SLURM_ARRAY_TASK_ID)");

  auto no_array = all;
  no_array.erase("SLURM_ARRAY_TASK_ID");
  a = resolve_shard_assignment(std::nullopt, std::nullopt, env_of(no_array));
  EXPECT_EQ(a.index, 1);
  EXPECT_EQ(a.count, 3);
  EXPECT_EQ(a.source, "SLURM_PROCID");

  std::map<std::string, std::string> k8s{{"JOB_COMPLETION_INDEX", "5"}};
  a = resolve_shard_assignment(std::nullopt, 8, env_of(k8s));
  EXPECT_EQ(a.index, 5);
  EXPECT_EQ(a.count, 8);
  EXPECT_EQ(a.source, "JOB_COMPLETION_INDEX");
  EXPECT_THROW(resolve_shard_assignment(std::nullopt, std::nullopt, env_of(k8s)), AssignmentError);

  a = resolve_shard_assignment(std::nullopt, std::nullopt, env_of({}));
  EXPECT_EQ(a.index, 0);
  EXPECT_EQ(a.count, 1);
  EXPECT_EQ(a.source, "default");
}

TEST(ShardAssign, BadValuesAreErrors) {
  EXPECT_THROW(resolve_shard_assignment(4, 4, env_of({})), AssignmentError);
  EXPECT_THROW(resolve_shard_assignment(-1, 4, env_of({})), AssignmentError);
  EXPECT_THROW(resolve_shard_assignment(0, 0, env_of({})), AssignmentError);
  EXPECT_THROW(resolve_shard_assignment(1, std::nullopt, env_of({})), AssignmentError);
  EXPECT_THROW(
      resolve_shard_assignment(std::nullopt, std::nullopt,
                               env_of({{"SLURM_ARRAY_TASK_ID", "x3"}, {"SLURM_ARRAY_TASK_COUNT", "4"}})),
      AssignmentError);
  // An array task id below the array's minimum is inconsistent.
  EXPECT_THROW(resolve_shard_assignment(std::nullopt, std::nullopt,
                                        env_of({{"SLURM_ARRAY_TASK_ID", "3"},
                                                {"SLURM_ARRAY_TASK_MIN", "5"},
                                                {"SLURM_ARRAY_TASK_COUNT", "4"}})),
               AssignmentError);
}

TEST(ShardAssign, StridedCoverEveryShardOnce) {
  // 10,000 shards on a 500-task array: each shard exactly once, 20 per worker.
  std::vector<int> seen(10000, 0);
  for (int64_t w = 0; w < 500; ++w) {
    ShardAssignment a{w, 500, "flags"};
    auto pos = assigned_positions(a, 10000);
    EXPECT_EQ(pos.size(), 20u);
    for (auto p : pos) seen[static_cast<size_t>(p)]++;
  }
  for (int s : seen) ASSERT_EQ(s, 1);
  // More workers than shards: the extra ones get nothing.
  EXPECT_TRUE(assigned_positions({5, 8, "flags"}, 3).empty());
}

TEST(ShardSelection, RangesIdsAndNames) {
  auto names = numbered(200);
  auto sel = parse_shard_selection("120-159");
  auto pos = selected_positions(sel, names);
  ASSERT_EQ(pos.size(), 40u);
  EXPECT_EQ(pos.front(), 120);
  EXPECT_EQ(pos.back(), 159);

  sel = parse_shard_selection("3,00007 10-12,7");  // duplicates collapse, padding is ignored
  pos = selected_positions(sel, names);
  EXPECT_EQ(pos, (std::vector<int64_t>{3, 7, 10, 11, 12}));

  std::vector<std::string> tars{"part-a", "part-b", "part-c"};
  sel = parse_shard_selection("part-c,part-a");
  EXPECT_EQ(selected_positions(sel, tars), (std::vector<int64_t>{0, 2}));

  // No selection: everything.
  EXPECT_EQ(selected_positions(ShardSelection{}, tars).size(), 3u);
}

TEST(ShardSelection, FileWithCommentsAndOutputNames) {
  auto names = numbered(20);
  auto path = temp_file("# shards to rerun\n00003_stats.json\nout/00005.tar  # by path\n\n8-9, 11\n");
  auto sel = parse_shard_selection("@" + path);
  EXPECT_EQ(selected_positions(sel, names), (std::vector<int64_t>{3, 5, 8, 9, 11}));
  auto sel2 = read_shard_selection_file(path);
  EXPECT_EQ(selected_positions(merge_selections(parse_shard_selection("0"), sel2), names),
            (std::vector<int64_t>{0, 3, 5, 8, 9, 11}));
}

TEST(ShardSelection, Errors) {
  auto names = numbered(10);
  auto message = [&](const std::string& spec) -> std::string {
    try {
      selected_positions(parse_shard_selection(spec), names);
    } catch (const AssignmentError& e) {
      return e.what();
    }
    return "(no error)";
  };
  EXPECT_NE(message("8-12").find("no input shard 10-12"), std::string::npos) << message("8-12");
  EXPECT_NE(message("8-12").find("00000 .. 00009"), std::string::npos);
  EXPECT_NE(message("nope").find("no input shard nope"), std::string::npos);
  EXPECT_NE(message("5-3").find("is empty"), std::string::npos);
  EXPECT_NE(message("0-1000000000").find("too large"), std::string::npos);
  EXPECT_NE(message("0*").find("neither a shard id"), std::string::npos);
  EXPECT_NE(message(",").find("names no shard"), std::string::npos);
  EXPECT_NE(message("@/nonexistent/list.txt").find("/nonexistent/list.txt: cannot be read"),
            std::string::npos);
  auto empty = temp_file("# nothing\n\n");
  EXPECT_NE(message("@" + empty).find("names no shard"), std::string::npos);
  auto bad = temp_file("1\n2\nx?\n");
  EXPECT_NE(message("@" + bad).find(bad + ":3"), std::string::npos) << message("@" + bad);
}

TEST(ShardSelection, StridedOverWorkers) {
  auto names = numbered(200);
  auto sel = parse_shard_selection("120-129");
  std::set<int64_t> all;
  for (int64_t w = 0; w < 3; ++w) {
    auto pos = worker_positions({w, 3, "flags"}, sel, names);
    for (auto p : pos) EXPECT_TRUE(all.insert(p).second);
    if (w == 1) {
      EXPECT_EQ(pos, (std::vector<int64_t>{121, 124, 127}));
    }
  }
  EXPECT_EQ(all.size(), 10u);
  EXPECT_EQ(*all.begin(), 120);
}

TEST(ShardSelection, FormatIdRanges) {
  EXPECT_EQ(format_id_ranges({7, 1, 2, 3, 9, 10, 2}), "1-3,7,9-10");
  EXPECT_EQ(format_id_ranges({}), "");
  EXPECT_EQ(shard_name_id("00017"), 17);
  EXPECT_EQ(shard_name_id("a17"), -1);
  EXPECT_EQ(shard_name_id(""), -1);
}
