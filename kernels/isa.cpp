// CPUID + XGETBV feature detection, the selection policy and the process-wide active choice.
#include "kernels/isa.h"

#include <cpuid.h>

#include <atomic>
#include <cstdlib>
#include <mutex>

#include "kernels/isa_probe.h"

namespace recap::kernels {

// This file is compiled without ISA flags: the scalar reference it stands for needs nothing
// beyond baseline x86-64, so nothing may have been enabled for it (e.g. by -march=native in
// CXXFLAGS, which would make the whole binary unportable).
static_assert(RECAP_COMPILED_FEATURE_SET == 0,
              "baseline files must be built for plain x86-64: remove -march/-m<isa> from CXXFLAGS");

namespace {

struct FeatureInfo {
  Feature feature;
  const char* name;
  uint64_t xcr0;  // OS state the feature's instructions touch
};
// In Feature order.
constexpr FeatureInfo kFeatures[] = {
    {Feature::Sse3, "sse3", 0},
    {Feature::Ssse3, "ssse3", 0},
    {Feature::Sse41, "sse4.1", 0},
    {Feature::Sse42, "sse4.2", 0},
    {Feature::Popcnt, "popcnt", 0},
    {Feature::Xsave, "xsave", 0},
    {Feature::Avx, "avx", kXcr0AvxState},
    {Feature::Avx2, "avx2", kXcr0AvxState},
    {Feature::Fma, "fma", kXcr0AvxState},
    {Feature::F16c, "f16c", kXcr0AvxState},
    {Feature::Bmi1, "bmi1", 0},
    {Feature::Bmi2, "bmi2", 0},
    {Feature::Lzcnt, "lzcnt", 0},
    {Feature::Movbe, "movbe", 0},
    {Feature::Avx512F, "avx512f", kXcr0Avx512State},
    {Feature::Avx512Bw, "avx512bw", kXcr0Avx512State},
    {Feature::Avx512Vl, "avx512vl", kXcr0Avx512State},
    {Feature::Avx512Dq, "avx512dq", kXcr0Avx512State},
    {Feature::Avx512Cd, "avx512cd", kXcr0Avx512State},
    {Feature::Avx512Vnni, "avx512vnni", kXcr0Avx512State},
    {Feature::Avx512Bf16, "avx512bf16", kXcr0Avx512State},
    {Feature::Avx512Vbmi, "avx512vbmi", kXcr0Avx512State},
    {Feature::Avx512Vbmi2, "avx512vbmi2", kXcr0Avx512State},
    {Feature::Avx512Ifma, "avx512ifma", kXcr0Avx512State},
    {Feature::Avx512Bitalg, "avx512bitalg", kXcr0Avx512State},
    {Feature::Avx512Vpopcntdq, "avx512vpopcntdq", kXcr0Avx512State},
};
static_assert(std::size(kFeatures) == static_cast<size_t>(Feature::Count), "one row per Feature");
constexpr bool features_in_order() {
  for (size_t i = 0; i < std::size(kFeatures); ++i)
    if (static_cast<size_t>(kFeatures[i].feature) != i) return false;
  return true;
}
static_assert(features_in_order(), "kFeatures rows must be in Feature order");

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
  auto set = [&f](Feature feature, unsigned reg, int bit) {
    if ((reg >> bit) & 1) f.cpuid |= feature_bit(feature);
  };
  __cpuid(1, eax, ebx, ecx, edx);
  set(Feature::Sse3, ecx, 0);
  set(Feature::Ssse3, ecx, 9);
  set(Feature::Fma, ecx, 12);
  set(Feature::Sse41, ecx, 19);
  set(Feature::Sse42, ecx, 20);
  set(Feature::Movbe, ecx, 22);
  set(Feature::Popcnt, ecx, 23);
  set(Feature::Xsave, ecx, 26);
  set(Feature::Avx, ecx, 28);
  set(Feature::F16c, ecx, 29);
  // XGETBV exists only when the OS has set CR4.OSXSAVE (CPUID.1:ECX bit 27).
  if ((ecx >> 27) & 1) f.xcr0 = read_xcr0();
  if (max_leaf >= 7) {
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    const unsigned max_sub7 = eax;
    set(Feature::Bmi1, ebx, 3);
    set(Feature::Avx2, ebx, 5);
    set(Feature::Bmi2, ebx, 8);
    set(Feature::Avx512F, ebx, 16);
    set(Feature::Avx512Dq, ebx, 17);
    set(Feature::Avx512Ifma, ebx, 21);
    set(Feature::Avx512Cd, ebx, 28);
    set(Feature::Avx512Bw, ebx, 30);
    set(Feature::Avx512Vl, ebx, 31);
    set(Feature::Avx512Vbmi, ecx, 1);
    set(Feature::Avx512Vbmi2, ecx, 6);
    set(Feature::Avx512Vnni, ecx, 11);
    set(Feature::Avx512Bitalg, ecx, 12);
    set(Feature::Avx512Vpopcntdq, ecx, 14);
    if (max_sub7 >= 1) {
      __cpuid_count(7, 1, eax, ebx, ecx, edx);
      set(Feature::Avx512Bf16, eax, 5);
    }
  }
  __cpuid(0x80000000u, eax, ebx, ecx, edx);
  if (eax >= 0x80000001u) {
    __cpuid(0x80000001u, eax, ebx, ecx, edx);
    set(Feature::Lzcnt, ecx, 5);  // ABM
  }
  return f;
}

std::string missing_message(const CpuFeatures& cpu, FeatureSet missing) {
  std::string m = "missing " + feature_names(missing);
  // Advertised by CPUID but without OS register state: say so, it is the surprising case.
  if ((cpu.cpuid & missing) == missing)
    m += " (the CPU has them but the OS has not enabled their registers in XCR0)";
  return m;
}

// Active choice, packed into one int (-1 = not chosen yet): isa | vnni << 4 | bf16 << 5.
std::atomic<int> g_active{-1};
std::once_flag g_init_once;

int pack(const IsaChoice& c) {
  return static_cast<int>(c.isa) | (c.avx512vnni ? 1 << 4 : 0) | (c.avx512bf16 ? 1 << 5 : 0);
}
IsaChoice unpack(int v) {
  return IsaChoice{static_cast<Isa>(v & 15), (v & (1 << 4)) != 0, (v & (1 << 5)) != 0};
}

void init_active() {
  const IsaChoice c = isa_from_force_value(std::getenv("RECAP_FORCE_ISA"));
  int expected = -1;
  g_active.compare_exchange_strong(expected, pack(c));
}

}  // namespace

const char* feature_name(Feature f) {
  const size_t i = static_cast<size_t>(f);
  return i < std::size(kFeatures) ? kFeatures[i].name : "unknown";
}

std::string feature_names(FeatureSet set) {
  std::string out;
  for (const FeatureInfo& info : kFeatures)
    if (set & feature_bit(info.feature)) {
      if (!out.empty()) out += ' ';
      out += info.name;
    }
  return out;
}

bool CpuFeatures::usable(Feature f) const {
  const size_t i = static_cast<size_t>(f);
  if (i >= std::size(kFeatures) || !advertises(f)) return false;
  return (xcr0 & kFeatures[i].xcr0) == kFeatures[i].xcr0;
}

FeatureSet CpuFeatures::usable_set() const {
  FeatureSet s = 0;
  for (const FeatureInfo& info : kFeatures)
    if (usable(info.feature)) s |= feature_bit(info.feature);
  return s;
}

const char* extension_name(IsaExtension e) {
  return e == IsaExtension::Avx512Vnni ? "vnni" : "bf16";
}

std::string describe(const IsaChoice& c) {
  std::string s = isa_name(c.isa);
  if (c.avx512vnni) s += "+vnni";
  if (c.avx512bf16) s += "+bf16";
  return s;
}

FeatureSet required_features(Isa isa) {
  switch (isa) {
    case Isa::Ref:
      return 0;
    case Isa::Avx2:
      return detail::compiled_features_avx2();
    case Isa::Avx512:
      return detail::compiled_features_avx512();
  }
  return ~FeatureSet{0};  // not a variant: never runnable
}

FeatureSet required_features(IsaExtension e) {
  switch (e) {
    case IsaExtension::Avx512Vnni:
      return detail::compiled_features_avx512vnni();
    case IsaExtension::Avx512Bf16:
      return detail::compiled_features_avx512bf16();
  }
  return ~FeatureSet{0};
}

FeatureSet missing_features(const CpuFeatures& cpu, Isa isa) {
  return required_features(isa) & ~cpu.usable_set();
}

FeatureSet missing_features(const CpuFeatures& cpu, IsaExtension e) {
  return required_features(e) & ~cpu.usable_set();
}

IsaChoice choice_for(const CpuFeatures& cpu, Isa isa) {
  const FeatureSet missing = missing_features(cpu, isa);
  if (missing != 0)
    throw IsaUnavailableError(std::string("this CPU/OS cannot run the ") + isa_name(isa) +
                              " kernels: " + missing_message(cpu, missing));
  IsaChoice c;
  c.isa = isa;
  if (isa == Isa::Avx512) {
    c.avx512vnni = missing_features(cpu, IsaExtension::Avx512Vnni) == 0;
    c.avx512bf16 = missing_features(cpu, IsaExtension::Avx512Bf16) == 0;
  }
  return c;
}

IsaChoice select_isa(const CpuFeatures& cpu) {
  for (Isa isa : {Isa::Avx512, Isa::Avx2})
    if (missing_features(cpu, isa) == 0) return choice_for(cpu, isa);
  return IsaChoice{};
}

IsaChoice isa_from_force_value(const char* value) {
  const CpuFeatures& cpu = cpu_features();
  if (value == nullptr || *value == '\0') return select_isa(cpu);
  Isa forced;
  try {
    forced = parse_isa(value);
  } catch (const std::invalid_argument&) {
    throw IsaUnavailableError(std::string("RECAP_FORCE_ISA='") + value + "' is not one of ref, avx2, avx512");
  }
  const FeatureSet missing = missing_features(cpu, forced);
  if (missing != 0)
    throw IsaUnavailableError(std::string("RECAP_FORCE_ISA=") + value + ": this CPU/OS cannot run " +
                              isa_name(forced) + ", " + missing_message(cpu, missing) +
                              " (best available: " + describe(select_isa(cpu)) + ")");
  return choice_for(cpu, forced);
}

bool isa_supported(Isa isa) {
  return missing_features(cpu_features(), isa) == 0;
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

Isa best_isa() {
  return select_isa(cpu_features()).isa;
}

IsaChoice active_choice() {
  int v = g_active.load(std::memory_order_acquire);
  if (v < 0) {
    std::call_once(g_init_once, init_active);
    v = g_active.load(std::memory_order_acquire);
  }
  return unpack(v);
}

Isa active_isa() {
  return active_choice().isa;
}

void set_active_isa(Isa isa) {
  const CpuFeatures& cpu = cpu_features();
  const FeatureSet missing = missing_features(cpu, isa);
  if (missing != 0)
    throw IsaUnavailableError(std::string("set_active_isa: this CPU/OS cannot run ") + isa_name(isa) + ", " +
                              missing_message(cpu, missing) +
                              " (best available: " + describe(select_isa(cpu)) + ")");
  g_active.store(pack(choice_for(cpu, isa)), std::memory_order_release);
}

void set_active_choice(const IsaChoice& choice) {
  const CpuFeatures& cpu = cpu_features();
  const IsaChoice runnable = choice_for(cpu, choice.isa);  // throws if the variant cannot run
  for (IsaExtension e : {IsaExtension::Avx512Vnni, IsaExtension::Avx512Bf16})
    if (choice.has(e) && !runnable.has(e))
      throw IsaUnavailableError(std::string("set_active_choice: this CPU/OS cannot run ") + describe(choice) +
                                ", " + missing_message(cpu, missing_features(cpu, e)));
  g_active.store(pack(choice), std::memory_order_release);
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
