#include "engine/scheduler.h"

#include <algorithm>
#include <stdexcept>

namespace recap::engine {

Scheduler::Scheduler(const models::LlavaModel& model, KvCachePool& pool, SchedulerOptions opts)
    : model_(model), pool_(pool), opts_(std::move(opts)) {
  const int64_t V = model_.config().text.vocab;
  if (opts_.vocab_limit <= 0 || opts_.vocab_limit > V) opts_.vocab_limit = V;
  if (opts_.max_batch < 1) throw std::invalid_argument("max batch must be at least 1");
  if (opts_.max_new_tokens < 1) throw std::invalid_argument("max new tokens must be at least 1");
}

Scheduler::~Scheduler() {
  if (!prefix_table_.empty()) pool_.release(prefix_table_);
}

int Scheduler::sequences_committed() const {
  return static_cast<int>(running_.size()) + pending_sequences_;
}

int64_t Scheduler::blocks_for_request(int64_t n_prompt, int n_captions, bool prefix) const {
  return pool_.blocks_needed(n_prompt, max_request_tokens(n_prompt), n_captions) -
         (prefix ? prefix_len_ / pool_.block_size() : 0);
}

void Scheduler::set_shared_prefix(const float* embeds, int64_t n) {
  const int64_t bs = pool_.block_size();
  if (!idle() || prefix_len_ > 0) throw std::logic_error("set_shared_prefix: before the first request, once");
  if (n < bs || n % bs != 0) throw std::invalid_argument("shared prefix must be whole blocks");
  prefix_table_ = pool_.allocate(n);
  models::SeqChunk c;
  c.embeds = embeds;
  c.n_tokens = n;
  c.start_pos = 0;
  c.block_table = prefix_table_.data();
  c.all_logits = false;
  logits_.resize(static_cast<size_t>(model_.config().text.vocab));
  model_.forward({c}, pool_.views(), logits_.data());
  prefix_len_ = n;
}

// The prefix's blocks go back to the pool; requests prefill their whole prompt from then on.
void Scheduler::drop_shared_prefix() {
  pool_.release(prefix_table_);
  prefix_len_ = 0;
}

bool Scheduler::can_admit(int64_t n_prompt, int n_captions, int64_t shared_prefix) const {
  const int64_t need = blocks_for_request(n_prompt, n_captions, uses_prefix(shared_prefix));
  if (need > pool_.total_blocks() || n_captions > opts_.max_batch) return idle();  // fails at once when alone
  // A request that cannot fit beside the prefix's blocks gets them back when alone (admit).
  if (need > pool_.total_blocks() - static_cast<int64_t>(prefix_table_.size())) return idle();
  if (sequences_committed() + n_captions > opts_.max_batch) return false;
  return pool_.free_blocks() - pending_blocks_ >= need;
}

void Scheduler::admit(CaptionRequest in) {
  auto r = std::make_shared<Request>();
  r->out.id = in.id;
  r->out.n_prompt = in.n_prompt;
  r->in = std::move(in);
  const int n = std::max(1, r->in.n_captions);
  r->in.n_captions = n;
  const int64_t hidden = model_.config().text.hidden;
  if (r->in.n_prompt <= 0 || static_cast<int64_t>(r->in.prompt_embeds.size()) != r->in.n_prompt * hidden) {
    r->out.error = "internal: prompt embeddings do not match the prompt length";
  } else {
    r->uses_prefix = uses_prefix(r->in.shared_prefix) && r->in.n_prompt > prefix_len_;
    const int64_t own = blocks_for_request(r->in.n_prompt, n, r->uses_prefix);
    // Admitted alone yet unable to fit beside the shared prefix: the prefix gives its blocks
    // back for good (a prompt with sample fields before the image, under a tight budget).
    if (idle() && prefix_len_ > 0 &&
        own > pool_.total_blocks() - static_cast<int64_t>(prefix_table_.size())) {
      drop_shared_prefix();
      r->uses_prefix = false;
    }
    const int64_t need = pool_.blocks_needed(r->in.n_prompt, max_request_tokens(r->in.n_prompt), n);
    if (need > pool_.total_blocks() || n > opts_.max_batch)
      r->out.error = "prompt of " + std::to_string(r->in.n_prompt) + " tokens + " +
                     std::to_string(opts_.max_new_tokens) + " new tokens x " + std::to_string(n) +
                     " captions does not fit the KV cache (" + std::to_string(pool_.total_blocks()) +
                     " blocks of " + std::to_string(pool_.block_size()) +
                     " positions) or the batch; raise --kv-cache-mb / --max-batch";
  }
  if (r->out.error.empty()) {
    // Every block the request can need is reserved now; they are taken at its prefill.
    pending_blocks_ += blocks_for_request(r->in.n_prompt, n, r->uses_prefix);
    pending_sequences_ += n;
  }
  pending_.push_back(std::move(r));
}

void Scheduler::finish_sequence(Sequence& s, const char* reason, std::vector<CaptionResult>* finished) {
  s.done = true;
  s.req->out.stop_reason[static_cast<size_t>(s.caption)] = reason;
  pool_.release(s.table);
  if (--s.req->open == 0) finished->push_back(std::move(s.req->out));
}

std::vector<CaptionResult> Scheduler::step() {
  std::vector<CaptionResult> finished;
  // Requests that failed at admission finish without running.
  std::vector<std::shared_ptr<Request>> prefill;
  int64_t prefill_tokens = 0;
  while (!pending_.empty()) {
    auto& r = pending_.front();
    if (!r->out.error.empty()) {
      finished.push_back(std::move(r->out));
      pending_.pop_front();
      continue;
    }
    const int64_t own = r->in.n_prompt - (r->uses_prefix ? prefix_len_ : 0);
    if (!prefill.empty() && prefill_tokens + own > opts_.max_prefill_tokens) break;
    prefill_tokens += own;
    prefill.push_back(r);
    pending_.pop_front();
  }
  if (prefill.empty() && running_.empty()) return finished;

  std::vector<models::SeqChunk> chunks;
  chunks.reserve(prefill.size() + running_.size());
  std::vector<std::vector<int32_t>> tables;  // seq0 tables of the prefilled requests
  tables.reserve(prefill.size());
  for (auto& r : prefill) {
    // The reservation made at admit() becomes real blocks (seq0 now, the other captions'
    // blocks when they fork below, still in this step).
    pending_blocks_ -= blocks_for_request(r->in.n_prompt, r->in.n_captions, r->uses_prefix);
    // With the shared prefix: its whole blocks are forked (shared, not copied), and only the
    // positions after it are computed.
    const int64_t skip = r->uses_prefix ? prefix_len_ : 0;
    tables.push_back(skip > 0 ? pool_.fork_table(prefix_table_, skip, max_request_tokens(r->in.n_prompt))
                              : pool_.allocate(max_request_tokens(r->in.n_prompt)));
    models::SeqChunk c;
    c.embeds = r->in.prompt_embeds.data() + static_cast<size_t>(skip * model_.config().text.hidden);
    c.n_tokens = r->in.n_prompt - skip;
    c.start_pos = skip;
    tokens_prefilled_ += r->in.n_prompt;
    prefix_saved_ += skip;
    c.block_table = tables.back().data();
    c.all_logits = false;
    chunks.push_back(c);
  }
  for (auto& s : running_) {
    models::SeqChunk c;
    c.ids = &s.last;
    c.n_tokens = 1;
    c.start_pos = s.pos;
    c.block_table = s.table.data();
    chunks.push_back(c);
  }
  const int64_t V = model_.config().text.vocab;
  logits_.resize(chunks.size() * static_cast<size_t>(V));
  auto t0 = std::chrono::steady_clock::now();
  model_.forward(chunks, pool_.views(), logits_.data());
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const double total_tokens = static_cast<double>(prefill_tokens + static_cast<int64_t>(running_.size()));
  const double ms_per_token = total_tokens > 0 ? ms / total_tokens : 0;

  // Decode rows first (their order in `chunks` follows the prefill rows).
  const size_t n_pre = prefill.size();
  for (size_t i = 0; i < running_.size(); ++i) {
    Sequence& s = running_[i];
    const float* row = logits_.data() + (n_pre + i) * static_cast<size_t>(V);
    s.req->out.decode_ms += ms_per_token;
    s.pos++;
    int32_t tok = sample_token(row, opts_.vocab_limit, s.req->in.sampling, s.rng, &scratch_);
    if (opts_.stop_ids.count(tok)) {
      finish_sequence(s, "stop_token", &finished);
      continue;
    }
    auto& out = s.req->out.tokens[static_cast<size_t>(s.caption)];
    out.push_back(tok);
    s.last = tok;
    if (static_cast<int>(out.size()) >= opts_.max_new_tokens) finish_sequence(s, "max_new_tokens", &finished);
  }
  running_.erase(std::remove_if(running_.begin(), running_.end(), [](const Sequence& s) { return s.done; }),
                 running_.end());

  // New sequences from the prefilled requests.
  for (size_t i = 0; i < n_pre; ++i) {
    auto& r = prefill[i];
    const int n = r->in.n_captions;
    pending_sequences_ -= n;
    r->out.prefill_ms =
        ms_per_token * static_cast<double>(r->in.n_prompt - (r->uses_prefix ? prefix_len_ : 0));
    r->out.tokens.assign(static_cast<size_t>(n), {});
    r->out.stop_reason.assign(static_cast<size_t>(n), "");
    r->open = n;
    const float* row = logits_.data() + i * static_cast<size_t>(V);
    std::vector<Sequence> seqs(static_cast<size_t>(n));
    for (int c = 0; c < n; ++c) {
      Sequence& s = seqs[static_cast<size_t>(c)];
      s.req = r;
      s.caption = c;
      s.pos = r->in.n_prompt;
      s.table = c == 0 ? tables[i]
                       : pool_.fork_table(tables[i], r->in.n_prompt, max_request_tokens(r->in.n_prompt));
      s.rng = Rng(sample_seed(r->in.sampling.seed, r->in.seed_key, c));
    }
    // Prompt embeddings are no longer needed once the cache holds them.
    std::vector<float>().swap(r->in.prompt_embeds);
    for (auto& s : seqs) {
      int32_t tok = sample_token(row, opts_.vocab_limit, r->in.sampling, s.rng, &scratch_);
      if (opts_.stop_ids.count(tok)) {
        finish_sequence(s, "stop_token", &finished);
        continue;
      }
      r->out.tokens[static_cast<size_t>(s.caption)].push_back(tok);
      s.last = tok;
      if (opts_.max_new_tokens <= 1) {
        finish_sequence(s, "max_new_tokens", &finished);
        continue;
      }
      running_.push_back(std::move(s));
    }
  }
  return finished;
}

}  // namespace recap::engine
