#include "engine/vision_worker.h"

#include <chrono>
#include <exception>

#include "engine/failpoints.h"
#include "engine/threads.h"

namespace recap::engine {

VisionWorker::VisionWorker(const models::LlavaModel& model) : model_(model), thread_([this] { loop(); }) {}

VisionWorker::~VisionWorker() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    quit_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

bool VisionWorker::busy() const {
  std::lock_guard<std::mutex> lk(mu_);
  return submitted_;
}

int VisionWorker::threads_in_use() const {
  std::lock_guard<std::mutex> lk(mu_);
  return submitted_ && !finished_ ? batch_.threads : 0;
}

void VisionWorker::submit(VisionBatch batch) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (submitted_) throw std::logic_error("VisionWorker::submit: a batch is already in progress");
    batch_ = std::move(batch);
    submitted_ = true;
    finished_ = false;
  }
  cv_.notify_all();
}

bool VisionWorker::collect(VisionBatch* out, int timeout_ms) {
  std::unique_lock<std::mutex> lk(mu_);
  if (!submitted_) return false;
  if (!finished_ && timeout_ms > 0)
    cv_.wait_for(lk, std::chrono::milliseconds(timeout_ms), [this] { return finished_; });
  if (!finished_) return false;
  *out = std::move(batch_);
  batch_ = VisionBatch{};
  submitted_ = finished_ = false;
  return true;
}

void VisionWorker::loop() {
  for (;;) {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [this] { return quit_ || (submitted_ && !finished_); });
    if (quit_) return;
    // The batch is ours until finished_ is set; the caller only reads the flags meanwhile.
    VisionBatch& b = batch_;
    lk.unlock();
    const auto& cfg = model_.config();
    const int64_t n = static_cast<int64_t>(b.tags.size());
    try {
      apply_threads(b.threads);  // this thread's OpenMP team size (a per-thread setting)
      b.features.assign(static_cast<size_t>(n * cfg.vision.num_patches() * cfg.text.hidden), 0.0f);
      const auto t0 = std::chrono::steady_clock::now();
      failpoint_vision_tower_batch();  // tests: RECAP_FAILPOINTS=vision_tower_batch:N
      model_.encode_images(b.pixels.data(), n, b.features.data());
      b.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    } catch (const std::exception& e) {
      b.error = e.what();
      b.features.clear();
    }
    std::vector<float>().swap(b.pixels);
    lk.lock();
    finished_ = true;
    lk.unlock();
    cv_.notify_all();
  }
}

}  // namespace recap::engine
