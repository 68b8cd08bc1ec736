// Records the extensions this file's ISA flags enable: every *_avx512vnni.cpp gets the same flags
// (cmake/RecapLayer.cmake), so this is what the avx512vnni kernels require at run time.
#include "kernels/isa_probe.h"

namespace recap::kernels::detail {

FeatureSet compiled_features_avx512vnni() {
  return RECAP_COMPILED_FEATURE_SET;
}

}  // namespace recap::kernels::detail
