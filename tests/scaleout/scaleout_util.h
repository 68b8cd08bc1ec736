// Helpers of the scale-out tests: a dataset of many tiny shards, the caption command line of
// one worker, and the check that every sample of the dataset appears exactly once across all
// output shards (sidecars and tars).
#pragma once
#include <gtest/gtest.h>

#include <set>

#include "../caption/cli_util.h"
#include "io/fileutil.h"

namespace recap::testing {

inline const std::string kWeights = std::string(RECAP_TEST_DATA) + "/tiny/llava_orig_with_vt_fp32";
inline const std::string kTokenizer = std::string(RECAP_SOURCE_DIR) + "/examples/demo/tokenizer.json";
inline const std::string kImages = std::string(RECAP_TEST_DATA) + "/tiny/images";
inline const std::vector<std::string> kImageNames{"wide_gradient.png", "tall_alpha.png", "gray_square.jpg",
                                                  "small_wide.png"};

inline std::string shard_name(int i) {
  std::string s = std::to_string(i);
  return std::string(5 - std::min<size_t>(5, s.size()), '0') + s;
}

// A list of n_shards * per_shard samples (local images); `url_of(i)` may replace sample i's URL.
template <class UrlOf>
std::string write_dataset(const std::string& dir, int n_shards, int per_shard, UrlOf url_of) {
  std::string text;
  for (int i = 0; i < n_shards * per_shard; ++i) {
    std::string url = url_of(i);
    if (url.empty()) url = kImages + "/" + kImageNames[static_cast<size_t>(i % 4)];
    text += nlohmann::json{{"url", url}, {"caption", "sample " + std::to_string(i)}, {"n", i}}.dump() + "\n";
  }
  io::atomic_write(dir + "/list.jsonl", text);
  return dir + "/list.jsonl";
}

// Flags shared by every worker of a test job (the assignment comes from the environment).
inline std::vector<std::string> job_flags(const std::string& list, const std::string& out, int per_shard) {
  return {"--weights",
          kWeights,
          "--tokenizer",
          kTokenizer,
          "--list",
          list,
          "--out",
          out,
          "--samples-per-shard",
          std::to_string(per_shard),
          "--max-new-tokens",
          "8",
          "--log-interval",
          "1000",
          "--io-workers",
          "2"};
}

// Every sample 0..n-1 exactly once across the shards' sidecars (by the pass-through "n"
// column) and tars (one .txt per successful sample, no member twice), all successful.
inline void expect_every_sample_once(const std::string& out, int n_shards, int per_shard) {
  std::map<int, int> seen;
  for (int s = 0; s < n_shards; ++s) {
    const std::string name = shard_name(s);
    ASSERT_TRUE(io::file_exists(out + "/" + name + "_stats.json")) << "shard " << name << " not done";
    auto side = read_jsonl(out + "/" + name + ".jsonl");
    EXPECT_EQ(side.size(), static_cast<size_t>(per_shard)) << name;
    std::set<std::string> keys;
    for (auto& j : side) {
      seen[j["n"].get<int>()]++;
      EXPECT_EQ(j["status"], "success") << j.dump();
      keys.insert(j["key"].get<std::string>());
    }
    std::vector<std::string> order;
    auto tar = read_tar(out + "/" + name + ".tar", &order);
    EXPECT_EQ(std::set<std::string>(order.begin(), order.end()).size(), order.size())
        << "a member appears twice in " << name << ".tar";
    size_t txt = 0;
    for (auto& m : order)
      if (m.size() > 4 && m.compare(m.size() - 4, 4, ".txt") == 0) {
        ++txt;
        EXPECT_TRUE(keys.count(m.substr(0, m.size() - 4)))
            << m << " in " << name << ".tar has no sidecar record";
      }
    EXPECT_EQ(txt, static_cast<size_t>(per_shard)) << name;
  }
  ASSERT_EQ(seen.size(), static_cast<size_t>(n_shards * per_shard));
  for (auto& [n, c] : seen) EXPECT_EQ(c, 1) << "sample " << n << " appears " << c << " times";
}

inline RunResult merge_stats(const std::string& out, const std::string& list, int per_shard,
                             const std::vector<std::string>& extra = {}) {
  std::vector<std::string> a{RECAP_BIN,
                             "merge-stats",
                             "--out",
                             out,
                             "--list",
                             list,
                             "--samples-per-shard",
                             std::to_string(per_shard),
                             "--json"};
  a.insert(a.end(), extra.begin(), extra.end());
  return run_cmd(a);
}

// `recap-engine caption flags...` run through env(1): `env` set, `unset` (and always
// OMP_NUM_THREADS, so the thread budget comes from the Slurm variables) removed.
inline std::vector<std::string> worker_cmd(const std::vector<std::string>& env,
                                           const std::vector<std::string>& flags,
                                           const std::vector<std::string>& unset = {}) {
  std::vector<std::string> a{"env", "-u", "OMP_NUM_THREADS"};
  for (const auto& u : unset) {
    a.push_back("-u");
    a.push_back(u);
  }
  a.insert(a.end(), env.begin(), env.end());
  a.push_back(RECAP_BIN);
  a.push_back("caption");
  a.insert(a.end(), flags.begin(), flags.end());
  return a;
}

inline int count_substr(const std::string& s, const std::string& what) {
  int n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

}  // namespace recap::testing
