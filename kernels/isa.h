// Instruction-set detection and the single dispatch point of every kernel.
//
// Detection uses CPUID *and* XGETBV: a CPU may advertise AVX-512 while the OS has not
// enabled the ZMM/opmask state, in which case executing AVX-512 faults. The active ISA is
// chosen once (first use) as the best available, unless RECAP_FORCE_ISA=ref|avx2|avx512
// says otherwise; forcing an ISA the CPU cannot run is a hard error, not a silent fallback.
#pragma once
#include <string>

namespace recap::kernels {

enum class Isa { Ref = 0, Avx2 = 1, Avx512 = 2 };

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;  // AVX2 path needs all three
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512vnni = false, avx512bf16 = false;  // used by the AVX-512 path when present
  bool os_ymm = false, os_zmm = false;          // XGETBV: OS saves YMM / ZMM+opmask state
};

const CpuFeatures& cpu_features();
// Best ISA this CPU + OS can run.
Isa best_isa();
// ISA every dispatched kernel uses: RECAP_FORCE_ISA if set (validated), else best_isa().
Isa active_isa();
// Overrides the active ISA (tests, benchmarks). Throws std::runtime_error if unsupported.
void set_active_isa(Isa isa);
const char* isa_name(Isa isa);
// Parses "ref" | "avx2" | "avx512"; throws std::invalid_argument otherwise.
Isa parse_isa(const std::string& name);
// The ISA a RECAP_FORCE_ISA value selects: null/empty -> best_isa(); otherwise parse_isa()
// and a supported() check. Throws std::runtime_error naming the value on failure.
Isa isa_from_force_value(const char* value);
// True when this CPU + OS can run `isa`.
bool isa_supported(Isa isa);

}  // namespace recap::kernels
