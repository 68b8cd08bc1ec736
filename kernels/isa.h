// Instruction-set detection and the single dispatch point of every kernel.
//
// Safe by construction: a kernel variant is selected only when the CPU advertises (CPUID) and
// the OS has enabled (XCR0, read with XGETBV) every instruction-set extension its files are
// compiled with. The requirements are not written down by hand: each ISA file pattern of
// cmake/RecapLayer.cmake (*_avx2.cpp, *_avx512.cpp, *_avx512vnni.cpp, *_avx512bf16.cpp) has a
// probe file (kernels/isa_probe_<pattern>.cpp) compiled with the very same flags, which records
// the extensions the compiler was allowed to use (its predefined __AVX2__, __AVX512F__, ...
// macros). Adding a flag to a pattern therefore adds the matching runtime check.
//
// Variants: Ref (scalar, baseline x86-64) < Avx2 < Avx512. The Avx512 variant itself needs
// only AVX-512 F/BW/VL/DQ; its VNNI (int8/int4 GEMM) and BF16 (bf16 GEMM) kernels live in
// their own files and are "extensions" of it, each used only when its own requirements hold,
// else the exact AVX2 kernels of that format run instead (bit-identical for int8/int4).
//
// The active choice is made once (first use) as the best available, unless
// RECAP_FORCE_ISA=ref|avx2|avx512 says otherwise; forcing a variant this CPU/OS cannot run
// throws IsaUnavailableError (never a silent fallback, never SIGILL).
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

namespace recap::kernels {

enum class Isa { Ref = 0, Avx2 = 1, Avx512 = 2 };

// Every x86 extension a variant's compiler flags can enable, one bit each (FeatureSet).
enum class Feature : uint32_t {
  Sse3,
  Ssse3,
  Sse41,
  Sse42,  // includes CRC32 (same CPUID bit)
  Popcnt,
  Xsave,
  Avx,
  Avx2,
  Fma,
  F16c,
  Bmi1,
  Bmi2,
  Lzcnt,
  Movbe,
  Avx512F,
  Avx512Bw,
  Avx512Vl,
  Avx512Dq,
  Avx512Cd,
  Avx512Vnni,
  Avx512Bf16,
  Avx512Vbmi,
  Avx512Vbmi2,
  Avx512Ifma,
  Avx512Bitalg,
  Avx512Vpopcntdq,
  Count
};
using FeatureSet = uint64_t;
constexpr FeatureSet feature_bit(Feature f) {
  return FeatureSet{1} << static_cast<uint32_t>(f);
}
const char* feature_name(Feature f);
// Space-separated names of the features in `set` ("" when empty).
std::string feature_names(FeatureSet set);

// XCR0 state components a feature needs the OS to save (Intel SDM vol. 1, 13.1).
constexpr uint64_t kXcr0Sse = 1u << 1, kXcr0Avx = 1u << 2;  // XMM, YMM upper halves
constexpr uint64_t kXcr0Opmask = 1u << 5, kXcr0ZmmHi256 = 1u << 6, kXcr0Hi16Zmm = 1u << 7;  // k0-7, ZMM
constexpr uint64_t kXcr0AvxState = kXcr0Sse | kXcr0Avx;
constexpr uint64_t kXcr0Avx512State = kXcr0AvxState | kXcr0Opmask | kXcr0ZmmHi256 | kXcr0Hi16Zmm;

// What the CPU advertises and the OS enables: raw facts, no policy (select_isa decides).
struct CpuFeatures {
  FeatureSet cpuid = 0;  // CPUID bits, whether or not the OS enabled their register state
  uint64_t xcr0 = 0;     // XGETBV(0) when CPUID.1:ECX.OSXSAVE is set, else 0
  bool advertises(Feature f) const { return (cpuid & feature_bit(f)) != 0; }
  // Advertised and its register state enabled by the OS: instructions of `f` will not fault.
  bool usable(Feature f) const;
  FeatureSet usable_set() const;
};

// Optional parts of a variant, compiled into their own files with their own flags.
enum class IsaExtension { Avx512Vnni = 0, Avx512Bf16 = 1 };
const char* extension_name(IsaExtension e);

// A dispatch decision: the variant and which of its extensions the kernels may use.
struct IsaChoice {
  Isa isa = Isa::Ref;
  bool avx512vnni = false;  // int8/int4 GEMM with vpdpbusd (else the AVX2 kernels)
  bool avx512bf16 = false;  // bf16 GEMM with vdpbf16ps (else the AVX2 kernels)
  bool has(IsaExtension e) const { return e == IsaExtension::Avx512Vnni ? avx512vnni : avx512bf16; }
  bool operator==(const IsaChoice&) const = default;
};
// "avx512+vnni+bf16", "avx512", "avx2", "ref".
std::string describe(const IsaChoice& c);

// Extensions the files of a variant / extension were compiled with (the probe files).
FeatureSet required_features(Isa isa);
FeatureSet required_features(IsaExtension e);
// Required but not usable on `cpu` (0 = runnable).
FeatureSet missing_features(const CpuFeatures& cpu, Isa isa);
FeatureSet missing_features(const CpuFeatures& cpu, IsaExtension e);

// Pure policy, unit-tested over synthetic CPUs: the best variant `cpu` can run with every
// extension of that variant it can run.
IsaChoice select_isa(const CpuFeatures& cpu);
// `isa` with every extension `cpu` can run; throws IsaUnavailableError if `cpu` cannot run it.
IsaChoice choice_for(const CpuFeatures& cpu, Isa isa);

// Thrown when a forced or requested variant cannot run on this CPU/OS, or RECAP_FORCE_ISA is
// not a variant name. what() names the value and the missing features.
class IsaUnavailableError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// This machine (CPUID + XGETBV, read once).
const CpuFeatures& cpu_features();
// Best ISA this CPU + OS can run.
Isa best_isa();
// ISA every dispatched kernel uses: RECAP_FORCE_ISA if set (validated), else best_isa().
Isa active_isa();
// The full active choice (variant + extensions).
IsaChoice active_choice();
// Overrides the active ISA with every extension this CPU can run (tests, benchmarks).
// Throws IsaUnavailableError if unsupported.
void set_active_isa(Isa isa);
// Overrides the active choice, e.g. AVX-512 without VNNI to test that fallback on a VNNI CPU.
// Throws IsaUnavailableError if the variant or a requested extension cannot run here.
void set_active_choice(const IsaChoice& choice);
const char* isa_name(Isa isa);
// Parses "ref" | "avx2" | "avx512"; throws std::invalid_argument otherwise.
Isa parse_isa(const std::string& name);
// The choice a RECAP_FORCE_ISA value selects: null/empty -> select_isa(cpu_features());
// otherwise parse_isa() and a runnable check. Throws IsaUnavailableError naming the value.
IsaChoice isa_from_force_value(const char* value);
// True when this CPU + OS can run `isa`.
bool isa_supported(Isa isa);

namespace detail {
// Defined by kernels/isa_probe_*.cpp: the features their (pattern's) flags enabled.
FeatureSet compiled_features_avx2();
FeatureSet compiled_features_avx512();
FeatureSet compiled_features_avx512vnni();
FeatureSet compiled_features_avx512bf16();
}  // namespace detail

}  // namespace recap::kernels
