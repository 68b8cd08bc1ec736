// CPUID + XGETBV feature detection and the process-wide active ISA.
#include "kernels/isa.h"

#include <cpuid.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <stdexcept>

namespace recap::kernels {
namespace {

uint64_t read_xcr0() {
  uint32_t eax = 0, edx = 0;
  // xgetbv with ecx=0 reads XCR0 (which register state the OS saves on context switch).
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

CpuFeatures detect() {
  CpuFeatures f;
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx)) return f;
  const unsigned max_leaf = eax;
  __cpuid(1, eax, ebx, ecx, edx);
  const bool osxsave = (ecx >> 27) & 1;
  f.fma = (ecx >> 12) & 1;
  f.f16c = (ecx >> 29) & 1;
  const bool avx = (ecx >> 28) & 1;
  if (osxsave && avx) {
    const uint64_t xcr0 = read_xcr0();
    f.os_ymm = (xcr0 & 0x6) == 0x6;    // SSE (bit 1) + AVX upper halves (bit 2)
    f.os_zmm = (xcr0 & 0xE6) == 0xE6;  // + opmask (5), ZMM0-15 upper (6), ZMM16-31 (7)
  }
  if (max_leaf >= 7) {
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    const unsigned max_sub7 = eax;
    f.avx2 = (ebx >> 5) & 1;
    f.avx512f = (ebx >> 16) & 1;
    f.avx512dq = (ebx >> 17) & 1;
    f.avx512bw = (ebx >> 30) & 1;
    f.avx512vl = (ebx >> 31) & 1;
    f.avx512vnni = (ecx >> 11) & 1;
    if (max_sub7 >= 1) {
      __cpuid_count(7, 1, eax, ebx, ecx, edx);
      f.avx512bf16 = (eax >> 5) & 1;
    }
  }
  // Features the OS does not enable are unusable: clear them so callers need one check.
  if (!f.os_ymm) f.avx2 = f.fma = f.f16c = false;
  if (!f.os_zmm) {
    f.avx512f = f.avx512bw = f.avx512vl = f.avx512dq = false;
    f.avx512vnni = f.avx512bf16 = false;
  }
  return f;
}

bool supported(Isa isa) {
  const CpuFeatures& f = cpu_features();
  const bool avx2 = f.avx2 && f.fma && f.f16c && f.os_ymm;
  switch (isa) {
    case Isa::Ref:
      return true;
    case Isa::Avx2:
      return avx2;
    case Isa::Avx512:
      return avx2 && f.os_zmm && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq;
  }
  return false;
}

std::atomic<int> g_active{-1};
std::once_flag g_init_once;

void init_active() {
  const Isa isa = isa_from_force_value(std::getenv("RECAP_FORCE_ISA"));
  int expected = -1;
  g_active.compare_exchange_strong(expected, static_cast<int>(isa));
}

}  // namespace

Isa isa_from_force_value(const char* value) {
  const Isa best = best_isa();
  if (value == nullptr || *value == '\0') return best;
  Isa forced;
  try {
    forced = parse_isa(value);
  } catch (const std::invalid_argument&) {
    throw std::runtime_error(std::string("RECAP_FORCE_ISA='") + value + "' is not one of ref, avx2, avx512");
  }
  if (!supported(forced))
    throw std::runtime_error(std::string("RECAP_FORCE_ISA=") + value + ": this CPU/OS cannot run " +
                             isa_name(forced) + " (best available: " + isa_name(best) + ")");
  return forced;
}

bool isa_supported(Isa isa) {
  return supported(isa);
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

Isa best_isa() {
  if (supported(Isa::Avx512)) return Isa::Avx512;
  if (supported(Isa::Avx2)) return Isa::Avx2;
  return Isa::Ref;
}

Isa active_isa() {
  int v = g_active.load(std::memory_order_acquire);
  if (v < 0) {
    std::call_once(g_init_once, init_active);
    v = g_active.load(std::memory_order_acquire);
  }
  return static_cast<Isa>(v);
}

void set_active_isa(Isa isa) {
  if (!supported(isa))
    throw std::runtime_error(std::string("set_active_isa: this CPU/OS cannot run ") + isa_name(isa) +
                             " (best available: " + isa_name(best_isa()) + ")");
  g_active.store(static_cast<int>(isa), std::memory_order_release);
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Ref:
      return "ref";
    case Isa::Avx2:
      return "avx2";
    case Isa::Avx512:
      return "avx512";
  }
  return "unknown";
}

Isa parse_isa(const std::string& name) {
  if (name == "ref") return Isa::Ref;
  if (name == "avx2") return Isa::Avx2;
  if (name == "avx512") return Isa::Avx512;
  throw std::invalid_argument("unknown ISA '" + name + "' (expected ref, avx2 or avx512)");
}

}  // namespace recap::kernels
