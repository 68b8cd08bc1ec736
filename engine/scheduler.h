// Continuous batching over the paged KV cache.
//
// Each step runs ONE decoder forward over a mixed batch: the full prompt of every request
// admitted since the last step (one chunk each, never split, so a sequence's numbers do not
// depend on what it was batched with) plus one token of every running sequence. Sequences
// leave the batch the step they stop (a stop token or max_new_tokens) and their blocks go
// back to the pool; new requests join whenever a batch slot (--max-batch) and every KV block
// they could ever need (--kv-cache-mb) are free. A request with n captions is prefilled once;
// its captions then continue as n sequences sharing the prompt's KV blocks.
//
// Shared prefix: set_shared_prefix() prefills positions every prompt begins with (the chat
// template's system and header tokens before the image) once, into whole blocks the scheduler
// keeps; a request marked with shared_prefix forks those blocks (refcount, never copied) and
// prefills only the rest of its prompt from that position on. Captions are bit-identical with
// and without it (tests/caption): the forward gives a position's K/V and the logits the same
// numbers whether earlier positions were computed in the same chunk or read from the cache.
#pragma once
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "engine/kv_cache.h"
#include "engine/sampler.h"
#include "models/llava.h"

namespace recap::engine {

struct SchedulerOptions {
  int max_batch = 8;  // sequences decoding at once (captions count separately)
  int max_new_tokens = 128;
  int64_t max_prefill_tokens = 4096;  // prompt tokens per step (at least one whole prompt runs)
  int64_t vocab_limit = 0;            // ids >= this are never sampled (tokenizer size)
  std::set<int32_t> stop_ids;         // generation ends on any of these (not included in output)
};

struct CaptionRequest {
  uint64_t id = 0;                   // caller's handle
  std::vector<float> prompt_embeds;  // [n_prompt, hidden]
  int64_t n_prompt = 0;
  int n_captions = 1;
  SamplingParams sampling;
  std::string seed_key;  // per-sample seed material (the sample key)
  // Positions this prompt shares with the scheduler's shared prefix: 0 (none) or exactly
  // shared_prefix_positions(), and then its first rows of prompt_embeds ARE the prefix's.
  int64_t shared_prefix = 0;
};

struct CaptionResult {
  uint64_t id = 0;
  std::vector<std::vector<int32_t>> tokens;  // per caption, stop token excluded
  std::vector<std::string> stop_reason;      // "stop_token" | "max_new_tokens"
  int64_t n_prompt = 0;
  double prefill_ms = 0;  // the share of the prefill step's time (by tokens)
  double decode_ms = 0;   // sum over the decode steps of this request's share
  std::string error;      // non-empty when the request failed (e.g. prompt longer than the cache)
};

class Scheduler {
 public:
  Scheduler(const models::LlavaModel& model, KvCachePool& pool, SchedulerOptions opts);
  ~Scheduler();  // gives the shared prefix's blocks back to the pool
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // True when the request can start now (batch slots and KV blocks). A request that can
  // never fit (prompt + max_new_tokens beyond the whole pool) is accepted and fails with an
  // error result at the next step rather than waiting forever.
  bool can_admit(int64_t n_prompt, int n_captions, int64_t shared_prefix = 0) const;
  void admit(CaptionRequest req);

  // Prefills `n` positions of `embeds` ([n, hidden]; n a multiple of the block size, >= one
  // block) once, as the prefix requests with shared_prefix == n continue from. Call before the
  // first admit. Throws KvCacheFull when the pool cannot hold it besides one request.
  void set_shared_prefix(const float* embeds, int64_t n);
  int64_t shared_prefix_positions() const { return prefix_len_; }
  // Prompt positions requests did not prefill because the shared prefix held them.
  int64_t prefix_positions_saved() const { return prefix_saved_; }

  // One forward over everything admitted/running; returns the requests that finished.
  std::vector<CaptionResult> step();

  bool idle() const { return running_.empty() && pending_.empty(); }
  // True when the next step prefills admitted prompts (compute-bound) rather than only
  // decoding one token per running sequence (memory-bound).
  bool has_pending_prefill() const { return !pending_.empty(); }
  // Prompt positions brought into the cache, each prompt once (shared-prefix positions
  // included; prefix_positions_saved() of them were not recomputed).
  int64_t tokens_prefilled() const { return tokens_prefilled_; }
  const SchedulerOptions& options() const { return opts_; }
  int64_t max_request_tokens(int64_t n_prompt) const { return n_prompt + opts_.max_new_tokens; }

 private:
  struct Request;
  struct Sequence {
    std::shared_ptr<Request> req;
    int caption = 0;
    std::vector<int32_t> table;
    int64_t pos = 0;  // tokens in the cache
    int32_t last = -1;
    Rng rng;
    bool done = false;
  };
  struct Request {
    CaptionRequest in;
    CaptionResult out;
    int open = 0;              // sequences still running
    bool uses_prefix = false;  // forks the shared prefix (decided at admit)
  };
  bool uses_prefix(int64_t shared_prefix) const { return prefix_len_ > 0 && shared_prefix == prefix_len_; }
  // Blocks a request takes from the pool (the shared prefix's whole blocks excluded).
  int64_t blocks_for_request(int64_t n_prompt, int n_captions, bool prefix) const;
  void drop_shared_prefix();

  int sequences_committed() const;
  void finish_sequence(Sequence& s, const char* reason, std::vector<CaptionResult>* finished);

  const models::LlavaModel& model_;
  KvCachePool& pool_;
  SchedulerOptions opts_;
  std::deque<std::shared_ptr<Request>> pending_;  // admitted, not prefilled yet
  std::vector<Sequence> running_;
  int64_t pending_blocks_ = 0;
  int pending_sequences_ = 0;
  int64_t tokens_prefilled_ = 0;
  std::vector<int32_t> prefix_table_;  // the shared prefix's blocks (held while it exists)
  int64_t prefix_len_ = 0;
  int64_t prefix_saved_ = 0;
  std::vector<float> logits_;
  std::vector<std::pair<float, int32_t>> scratch_;
};

}  // namespace recap::engine
