// engine/ units: KV block pool (the one KV cache: shape, element sizes, block size), sampler, shard
// assignment, shard outputs (resume after a torn write), caption post-processing.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "cli_util.h"
#include "engine/caption_pipeline.h"
#include "engine/fingerprint.h"
#include "engine/kv_cache.h"
#include "engine/run_plan.h"
#include "engine/sampler.h"
#include "engine/shard_assign.h"
#include "engine/shard_output.h"
#include "engine/threads.h"

using namespace recap::engine;
using namespace recap::testing;
namespace io = recap::io;

namespace {
KvCacheShape small_shape() {
  KvCacheShape s;
  s.layers = 2;
  s.kv_heads = 2;
  s.head_dim = 4;
  s.block_size = 4;
  return s;
}
}  // namespace

TEST(KvCachePool, AllocateReleaseAndBudget) {
  auto shape = small_shape();
  EXPECT_EQ(shape.bytes_per_block(), 2u * 2 * 2 * 4 * 4 * 4);
  EXPECT_EQ(KvCachePool::blocks_for_budget(shape, 10 * shape.bytes_per_block() + 5), 10);
  KvCachePool pool(shape, 10);
  EXPECT_EQ(pool.views().size(), 2u);
  auto t = pool.allocate(9);  // 3 blocks
  EXPECT_EQ(t.size(), 3u);
  EXPECT_EQ(pool.free_blocks(), 7);
  EXPECT_THROW(pool.allocate(40), KvCacheFull);
  EXPECT_EQ(pool.free_blocks(), 7);  // a failed allocation takes nothing
  pool.release(t);
  EXPECT_TRUE(t.empty());
  EXPECT_EQ(pool.free_blocks(), 10);
}

TEST(KvCachePool, ForkSharesWholeBlocksAndCopiesThePartialOne) {
  KvCachePool pool(small_shape(), 16);
  auto a = pool.allocate(14);  // 4 blocks; prefix of 6 positions = 1 whole block + 2 positions
  const auto& v = pool.views()[1];
  const size_t block_floats = static_cast<size_t>(v.block_stride);
  auto* k = static_cast<float*>(v.k_base);
  for (size_t i = 0; i < block_floats; ++i)
    k[static_cast<size_t>(a[1]) * block_floats + i] = 1.5f + static_cast<float>(i);
  EXPECT_EQ(pool.blocks_needed(6, 14, 3), 4 + 2 * 3);
  auto b = pool.fork_table(a, 6, 14);
  ASSERT_EQ(b.size(), 4u);
  EXPECT_EQ(b[0], a[0]);  // shared
  EXPECT_EQ(pool.refcount(a[0]), 2);
  EXPECT_NE(b[1], a[1]);  // the partial block is a copy
  for (size_t i = 0; i < block_floats; ++i)
    EXPECT_EQ(k[static_cast<size_t>(b[1]) * block_floats + i], 1.5f + static_cast<float>(i));
  EXPECT_EQ(pool.free_blocks(), 16 - 4 - 3);
  pool.release(a);
  EXPECT_EQ(pool.refcount(b[0]), 1);
  pool.release(b);
  EXPECT_EQ(pool.free_blocks(), 16);
  std::vector<int32_t> bad{b.empty() ? 0 : b[0]};
  EXPECT_THROW(pool.release(bad), std::logic_error);  // double release is caught
}

TEST(KvCachePool, ShapeOfADecoderUsesTheOneBlockSizeAndElementSizes) {
  recap::models::TextConfig t;
  t.layers = 3;
  t.kv_heads = 2;
  t.head_dim = 8;
  const KvCacheShape bf16 = KvCacheShape::for_text(t, recap::kernels::KvDType::BF16);
  EXPECT_EQ(bf16.layers, 3);
  EXPECT_EQ(bf16.kv_heads, 2);
  EXPECT_EQ(bf16.head_dim, 8);
  EXPECT_EQ(bf16.block_size, kKvBlockPositions);
  EXPECT_EQ(KvCacheShape{}.block_size, kKvBlockPositions);
  // 3 layers x (K + V) x 2 heads x 16 positions x 8 dims x 2 bytes.
  EXPECT_EQ(bf16.bytes_per_block(), 3u * 2 * 2 * 16 * 8 * 2);
  EXPECT_EQ(KvCacheShape::for_text(t, recap::kernels::KvDType::F32, 4).bytes_per_block(),
            3u * 2 * 2 * 4 * 8 * 4);
  // The views the model reads: one per layer, blocks of [kv_heads][block][head_dim].
  KvCachePool pool(bf16, 5);
  ASSERT_EQ(pool.views().size(), 3u);
  for (const auto& v : pool.views()) {
    EXPECT_EQ(v.dtype, recap::kernels::KvDType::BF16);
    EXPECT_EQ(v.block_size, kKvBlockPositions);
    EXPECT_EQ(v.block_stride, 2 * kKvBlockPositions * 8);
  }
  EXPECT_EQ(pool.blocks_for_tokens(kKvBlockPositions + 1), 2);

  EXPECT_EQ(kv_dtype_size(recap::kernels::KvDType::F32), 4u);
  EXPECT_EQ(kv_dtype_size(recap::kernels::KvDType::F16), 2u);
  for (const char* name : {"f32", "bf16", "f16"}) EXPECT_STREQ(kv_dtype_name(parse_kv_dtype(name)), name);
  try {
    parse_kv_dtype("fp8");
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "unknown KV cache dtype 'fp8' (expected f32, bf16 or f16)");
  }
}

TEST(Sampler, GreedyTakesLowestIdOnTiesAndRespectsTheLimit) {
  std::vector<float> l{0.f, 3.f, 1.f, 3.f, 9.f};
  EXPECT_EQ(argmax_lowest(l.data(), 5), 4);
  EXPECT_EQ(argmax_lowest(l.data(), 4), 1);  // tie 1 vs 3: lowest id
  std::vector<float> n{NAN, 2.f, NAN};
  EXPECT_EQ(argmax_lowest(n.data(), 3), 1);
  Rng rng(1);
  std::vector<std::pair<float, int32_t>> scratch;
  SamplingParams greedy;
  EXPECT_EQ(sample_token(l.data(), 4, greedy, rng, &scratch), 1);
  SamplingParams hot;
  hot.temperature = 5.f;
  for (int i = 0; i < 200; ++i) EXPECT_LT(sample_token(l.data(), 3, hot, rng, &scratch), 3);
}

TEST(Sampler, TopKTopPAndSeededDeterminism) {
  std::vector<float> l{5.f, 4.f, 3.f, 0.f, -1.f, -2.f};
  std::vector<std::pair<float, int32_t>> scratch;
  SamplingParams k2;
  k2.temperature = 1.f;
  k2.top_k = 2;
  Rng rng(42);
  std::map<int, int> seen;
  for (int i = 0; i < 2000; ++i) seen[sample_token(l.data(), 6, k2, rng, &scratch)]++;
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_GT(seen[0], seen[1]);
  // p(0) = 0.66 of the whole softmax: top_p 0.5 keeps only id 0.
  SamplingParams p;
  p.temperature = 1.f;
  p.top_p = 0.5f;
  for (int i = 0; i < 200; ++i) EXPECT_EQ(sample_token(l.data(), 6, p, rng, &scratch), 0);
  // Same seed material, same draws; different key, different stream.
  Rng a(sample_seed(7, "key1", 0)), b(sample_seed(7, "key1", 0)), c(sample_seed(7, "key2", 0)),
      d(sample_seed(7, "key1", 1));
  EXPECT_EQ(a.next(), b.next());
  EXPECT_NE(Rng(sample_seed(7, "key1", 0)).next(), c.next());
  EXPECT_NE(Rng(sample_seed(7, "key1", 0)).next(), d.next());
  for (int i = 0; i < 1000; ++i) {
    double u = a.uniform();
    EXPECT_GE(u, 0.0);
    EXPECT_LT(u, 1.0);
  }
}

// Draw frequencies follow the distribution the parameters define: softmax(logits / T),
// renormalised over the top-k / nucleus set. 40000 draws from a fixed seed: the binomial
// standard deviation of a frequency is <= 0.0025, so 0.015 is a 6-sigma tolerance.
TEST(Sampler, FrequenciesFollowTemperatureTopKAndTopP) {
  const std::vector<float> l{2.f, 1.f, 0.5f, 0.f, -1.f};
  std::vector<std::pair<float, int32_t>> scratch;
  auto frequencies = [&](const SamplingParams& p) {
    Rng rng(12345);
    std::vector<double> f(l.size(), 0.0);
    const int n = 40000;
    for (int i = 0; i < n; ++i)
      f[static_cast<size_t>(sample_token(l.data(), 5, p, rng, &scratch))] += 1.0 / n;
    return f;
  };
  auto softmax = [&](float t, size_t keep) {
    std::vector<double> e(l.size(), 0.0);
    double z = 0;
    for (size_t i = 0; i < keep; ++i) z += e[i] = std::exp(static_cast<double>(l[i]) / t);
    for (auto& v : e) v /= z;
    return e;
  };
  auto expect_close = [](const std::vector<double>& got, const std::vector<double>& want, const char* what) {
    for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 0.015) << what << " id " << i;
  };
  SamplingParams p;
  p.temperature = 1.f;
  expect_close(frequencies(p), softmax(1.f, 5), "T=1");
  p.temperature = 0.5f;
  expect_close(frequencies(p), softmax(0.5f, 5), "T=0.5");
  p.temperature = 2.f;
  expect_close(frequencies(p), softmax(2.f, 5), "T=2");
  // top-k 3 at T=1: renormalised over ids 0..2.
  p.temperature = 1.f;
  p.top_k = 3;
  expect_close(frequencies(p), softmax(1.f, 3), "top_k=3");
  // top-p: at T=1 the sorted probabilities are 0.553, 0.203, 0.123, 0.075, 0.027 (cumulative
  // 0.553, 0.756, 0.879, ...): p = 0.7 keeps the smallest prefix reaching 0.7, ids {0, 1}.
  p.top_k = 0;
  p.top_p = 0.7f;
  expect_close(frequencies(p), softmax(1.f, 2), "top_p=0.7");
  // p = 0.8 needs a third id.
  p.top_p = 0.8f;
  expect_close(frequencies(p), softmax(1.f, 3), "top_p=0.8");
}

TEST(ShardAssign, ResolutionOrder) {
  auto env = [](std::map<std::string, std::string> m) -> EnvLookup {
    return [m](const std::string& k) -> std::optional<std::string> {
      auto it = m.find(k);
      if (it == m.end()) return std::nullopt;
      return it->second;
    };
  };
  auto a = resolve_shard_assignment(2, 5, env({{"SLURM_ARRAY_TASK_ID", "9"}}));
  EXPECT_EQ(a.index, 2);
  EXPECT_EQ(a.source, "flags");
  auto s = resolve_shard_assignment(std::nullopt, std::nullopt,
                                    env({{"SLURM_ARRAY_TASK_ID", "12"},
                                         {"SLURM_ARRAY_TASK_MIN", "10"},
                                         {"SLURM_ARRAY_TASK_COUNT", "4"},
                                         {"SLURM_PROCID", "0"}}));
  EXPECT_EQ(s.index, 2);
  EXPECT_EQ(s.count, 4);
  auto p = resolve_shard_assignment(std::nullopt, std::nullopt,
                                    env({{"SLURM_PROCID", "3"}, {"SLURM_NTASKS", "8"}}));
  EXPECT_EQ(p.index, 3);
  EXPECT_EQ(p.count, 8);
  auto k = resolve_shard_assignment(std::nullopt, 6, env({{"JOB_COMPLETION_INDEX", "5"}}));
  EXPECT_EQ(k.index, 5);
  EXPECT_EQ(k.source, "JOB_COMPLETION_INDEX");
  EXPECT_THROW(resolve_shard_assignment(std::nullopt, std::nullopt, env({{"JOB_COMPLETION_INDEX", "5"}})),
               AssignmentError);
  EXPECT_THROW(resolve_shard_assignment(4, 4, env({})), AssignmentError);
  EXPECT_THROW(resolve_shard_assignment(1, std::nullopt, env({})), AssignmentError);
  EXPECT_THROW(resolve_shard_assignment(std::nullopt, std::nullopt,
                                        env({{"SLURM_ARRAY_TASK_ID", "x"}, {"SLURM_ARRAY_TASK_COUNT", "2"}})),
               AssignmentError);
  auto d = resolve_shard_assignment(std::nullopt, std::nullopt, env({}));
  EXPECT_EQ(d.count, 1);
  EXPECT_EQ(assigned_positions({1, 3, "t"}, 10), (std::vector<int64_t>{1, 4, 7}));
}

namespace {
SampleOutcome outcome(int64_t i, bool ok) {
  SampleOutcome s;
  s.index = i;
  s.key = "k" + std::to_string(i);
  s.success = ok;
  s.meta = {{"key", s.key},
            {"status", ok ? "success" : "failed_to_download"},
            {"error_message", ok ? "" : "HTTP 404"},
            {"tokens_out", ok ? 3 : 0}};
  if (ok) {
    s.captions = {"caption " + std::to_string(i)};
    s.image_bytes = std::string(700, 'i');
    s.image_ext = "jpg";
  }
  return s;
}
}  // namespace

TEST(ShardOutput, ResumeDropsTornRecordsAndPublishesEachSampleOnce) {
  auto dir = make_temp_dir("shardout");
  {
    ShardProbe probe;
    auto o = ShardOutput::open(dir, "00007", "fpA", false, 0, &probe);
    ASSERT_TRUE(o);
    o->append(outcome(0, true));
    o->append(outcome(1, false));
    o->append(outcome(2, true));
    // A second worker cannot take the shard while we hold it.
    ShardProbe p2;
    EXPECT_EQ(ShardOutput::open(dir, "00007", "fpA", false, 0, &p2), nullptr);
    EXPECT_EQ(p2.state, ShardState::Busy);
  }  // "crash": never finished
  // Simulate a kill in the middle of writing sample 3: tar bytes without a log line, and a
  // torn log line.
  {
    io::OutFile t(dir + "/.00007.tar.partial", io::OutFile::Mode::Append);
    t.write(std::string(1000, 'g'));
    io::OutFile l(dir + "/.00007.log.partial", io::OutFile::Mode::Append);
    l.write("{\"i\": 3, \"tar_end\": 99999, \"me");
  }
  EXPECT_EQ(probe_shard(dir, "00007", "fpB").state, ShardState::Conflict);
  ShardProbe probe;
  auto o = ShardOutput::open(dir, "00007", "fpA", false, 0, &probe);
  ASSERT_TRUE(o);
  EXPECT_EQ(o->resumed_count(), 3);
  EXPECT_EQ(o->done_indices(), (std::set<int64_t>{0, 1, 2}));
  o->append(outcome(2, true));  // already done: ignored
  o->append(outcome(3, true));
  auto st = o->finish({{"isa", "test"}}, 1.0, 3.0);
  EXPECT_EQ(st["count"], 4);
  EXPECT_EQ(st["successes"], 3);
  EXPECT_EQ(st["failed_to_download"], 1);
  EXPECT_EQ(st["status_dict"]["HTTP 404"], 1);
  EXPECT_EQ(st["resumed_samples"], 3);
  EXPECT_EQ(st["isa"], "test");
  EXPECT_EQ(st["duration"], 2.0);
  std::vector<std::string> order;
  auto tar = read_tar(dir + "/00007.tar", &order);
  EXPECT_EQ(order.size(), 9u);  // 3 successes x (jpg, txt, json)
  EXPECT_EQ(tar["k3.txt"], "caption 3");
  auto side = read_jsonl(dir + "/00007.jsonl");
  ASSERT_EQ(side.size(), 4u);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(side[static_cast<size_t>(i)]["key"], "k" + std::to_string(i));
  EXPECT_FALSE(io::file_exists(dir + "/.00007.log.partial"));
  EXPECT_EQ(run_cmd({"tar", "-tf", dir + "/00007.tar"}).rc, 0);
  o.reset();
  EXPECT_EQ(probe_shard(dir, "00007", "fpA").state, ShardState::Done);
  ShardProbe p3;
  EXPECT_EQ(ShardOutput::open(dir, "00007", "fpA", false, 0, &p3), nullptr);
  EXPECT_EQ(p3.state, ShardState::Done);
  EXPECT_THROW(ShardOutput::open(dir, "00007", "fpB", false, 0, &p3), FingerprintMismatch);
  auto re = ShardOutput::open(dir, "00007", "fpB", true, 0, &p3);  // --overwrite
  ASSERT_TRUE(re);
  EXPECT_EQ(re->resumed_count(), 0);
  EXPECT_FALSE(io::file_exists(dir + "/00007_stats.json"));
}

TEST(PostProcess, FirstSentenceAndShear) {
  EXPECT_EQ(first_sentence("  A dog. On grass."), "A dog");
  EXPECT_EQ(first_sentence("no period here "), "no period here");
  EXPECT_EQ(first_sentence(".starts with dot"), "");
  EXPECT_EQ(count_words("  two  words\n"), 2);
  EXPECT_EQ(shear_words("a photo of a red car", 3), "a photo of");
  EXPECT_EQ(shear_words("short", 3), "short");
  EXPECT_EQ(shear_words("keep  all", 0), "keep  all");
}

TEST(Threads, ExplicitThenOmpWithinTheLimitThenDetected) {
  EXPECT_EQ(resolve_threads(3).threads, 3);
  EXPECT_EQ(resolve_threads(3).source, "--threads");
  const int limit = resolve_threads(0).threads;
  ::setenv("OMP_NUM_THREADS", "1", 1);
  EXPECT_EQ(resolve_threads(0).threads, 1);
  EXPECT_EQ(resolve_threads(0).source, "OMP_NUM_THREADS");
  // More than the CPUs this process may use is capped, and the source says so.
  ::setenv("OMP_NUM_THREADS", std::to_string(limit + 5).c_str(), 1);
  EXPECT_EQ(resolve_threads(0).threads, limit);
  EXPECT_NE(resolve_threads(0).source.find("capped by"), std::string::npos) << resolve_threads(0).source;
  ::setenv("SLURM_CPUS_PER_TASK", "1", 1);
  EXPECT_EQ(resolve_threads(0).threads, 1);
  ::unsetenv("SLURM_CPUS_PER_TASK");
  ::unsetenv("OMP_NUM_THREADS");
  ::setenv("SLURM_CPUS_PER_TASK", "1", 1);
  EXPECT_EQ(resolve_threads(0).threads, 1);
  ::unsetenv("SLURM_CPUS_PER_TASK");
  auto d = resolve_threads(0);
  EXPECT_GE(d.threads, 1);
  EXPECT_LE(d.threads, affinity_cpu_count());
}

TEST(Fingerprint, MaterialChangeNamesEveryDifferingField) {
  using nlohmann::ordered_json;
  ordered_json was = {
      {"samples_per_shard", 4}, {"weights", {{"a.safetensors", {{"xxh3", "01"}}}}}, {"old", 1}};
  ordered_json now = {
      {"samples_per_shard", 8}, {"weights", {{"a.safetensors", {{"xxh3", "02"}}}}}, {"new", true}};
  EXPECT_EQ(
      recap::engine::describe_material_change(was, now),
      "samples_per_shard was 4, now 8; weights.a.safetensors.xxh3 was \"01\", now \"02\"; new was absent, "
      "now true; old was 1, now absent");
  EXPECT_EQ(recap::engine::describe_material_change(was, now, 1),
            "samples_per_shard was 4, now 8; and 3 more field(s)");
  EXPECT_EQ(recap::engine::describe_material_change(now, now), "");
  // The hash is of the material: any field changes it, equal material gives equal hashes.
  EXPECT_EQ(recap::engine::fingerprint_of(now),
            recap::engine::fingerprint_of(ordered_json::parse(now.dump())));
  EXPECT_NE(recap::engine::fingerprint_of(now), recap::engine::fingerprint_of(was));
}

TEST(RunPlan, MergesPerShardKeepsOtherInputsAndFindsStaleShards) {
  using nlohmann::ordered_json;
  ordered_json old = {{"00000", {{"input", "/l.jsonl"}, {"samples", 4}}},
                      {"00001", {{"input", "/l.jsonl"}, {"samples", 4}}},
                      {"00002", {{"input", "/l.jsonl"}, {"samples", 4}}},
                      {"x", {{"input", "/x.tar"}, {"samples", nullptr}}}};
  // The same plan: nothing to write.
  std::vector<std::pair<std::string, ordered_json>> same;
  for (auto it = old.begin(); it != old.end(); ++it) same.emplace_back(it.key(), it.value());
  auto m0 = recap::engine::merge_run_plan(old, same, {"/l.jsonl", "/x.tar"});
  EXPECT_FALSE(m0.differs);
  EXPECT_EQ(m0.shards, old);
  // Another layout of /l.jsonl only: 00000 changes, 00002 is stale, the tar's entry stays.
  auto m = recap::engine::merge_run_plan(old,
                                         {{"00000", {{"input", "/l.jsonl"}, {"samples", 8}}},
                                          {"00001", {{"input", "/l.jsonl"}, {"samples", 4}}}},
                                         {"/l.jsonl"});
  EXPECT_TRUE(m.differs);
  ASSERT_EQ(m.changed.size(), 1u);
  EXPECT_EQ(m.changed[0].first, "00000");
  EXPECT_EQ(m.changed[0].second, "samples was 4, now 8");
  EXPECT_EQ(m.stale, std::vector<std::string>{"00002"});
  EXPECT_TRUE(m.shards.contains("x"));
  EXPECT_FALSE(m.shards.contains("00002"));
  EXPECT_EQ(m.shards["00000"]["samples"], 8);
}
