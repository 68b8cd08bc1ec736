// A 64-byte aligned, owning byte buffer (or a non-owning view of external memory, e.g. an
// mmap'ed file). Used for packed weights and activation scratch.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

namespace recap::kernels {

class AlignedBuffer {
 public:
  static constexpr size_t kAlign = 64;
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t bytes) { allocate(bytes); }
  static AlignedBuffer view(const void* data, size_t bytes) {
    AlignedBuffer b;
    b.data_ = static_cast<uint8_t*>(const_cast<void*>(data));
    b.size_ = bytes;
    b.owned_ = false;
    return b;
  }
  AlignedBuffer(AlignedBuffer&& o) noexcept { swap(o); }
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      swap(o);
    }
    return *this;
  }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer() { reset(); }

  void allocate(size_t bytes) {
    reset();
    size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
    if (rounded == 0) rounded = kAlign;
    data_ = static_cast<uint8_t*>(std::aligned_alloc(kAlign, rounded));
    if (!data_) throw std::bad_alloc();
    size_ = bytes;
    owned_ = true;
  }
  void reset() {
    if (owned_ && data_) std::free(data_);
    data_ = nullptr;
    size_ = 0;
    owned_ = false;
  }
  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  template <class T> T* as() { return reinterpret_cast<T*>(data_); }
  template <class T> const T* as() const { return reinterpret_cast<const T*>(data_); }
  size_t size() const { return size_; }
  bool owned() const { return owned_; }
  bool empty() const { return size_ == 0; }

 private:
  void swap(AlignedBuffer& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    std::swap(owned_, o.owned_);
  }
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  bool owned_ = false;
};

}  // namespace recap::kernels
