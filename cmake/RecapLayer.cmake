# recap_layer(NAME dir): an OBJECT library of every .cpp in the directory (recursively).
# Files named *_avx2.cpp, *_avx512.cpp, *_avx512vnni.cpp and *_avx512bf16.cpp get their ISA
# flags here and only here, so the rest of the binary stays portable x86-64 and the kernels
# are picked at run time. Each pattern has a probe file kernels/isa_probe_<pattern>.cpp built
# with the same flags: the dispatcher (kernels/isa.h) requires at run time exactly what these
# flags enable, so extending a list below extends the runtime check with it.
#   avx2        Haswell / Zen 1+: AVX2, FMA, F16C, BMI2 (and the SSE/AVX they imply)
#   avx512      Skylake-X and later: AVX-512 F/BW/VL/DQ on top of avx2 (no VNNI, no BF16)
#   avx512vnni  avx512 + VNNI (Cascade Lake, Ice Lake, Zen 4): the int8/int4 GEMM kernels
#   avx512bf16  avx512 + BF16 (Cooper Lake, Sapphire Rapids, Zen 4): the bf16 GEMM kernel
set(RECAP_AVX2_FLAGS -mavx2 -mfma -mf16c -mbmi2)
set(RECAP_AVX512_FLAGS -mavx512f -mavx512bw -mavx512vl -mavx512dq ${RECAP_AVX2_FLAGS})
set(RECAP_AVX512VNNI_FLAGS -mavx512vnni ${RECAP_AVX512_FLAGS})
set(RECAP_AVX512BF16_FLAGS -mavx512bf16 ${RECAP_AVX512_FLAGS})
function(recap_layer target)
  file(GLOB_RECURSE srcs CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*.cpp ${CMAKE_CURRENT_SOURCE_DIR}/*.c)
  if(NOT srcs)
    # A layer with no sources yet still has to form an object library.
    set(stub ${CMAKE_CURRENT_BINARY_DIR}/${target}_empty.cpp)
    file(WRITE ${stub} "// empty layer\n")
    set(srcs ${stub})
  endif()
  add_library(${target} OBJECT ${srcs})
  foreach(src IN LISTS srcs)
    if(src MATCHES "_avx512vnni\\.cpp$")
      set_source_files_properties(${src} PROPERTIES COMPILE_OPTIONS "${RECAP_AVX512VNNI_FLAGS}")
    elseif(src MATCHES "_avx512bf16\\.cpp$")
      set_source_files_properties(${src} PROPERTIES COMPILE_OPTIONS "${RECAP_AVX512BF16_FLAGS}")
    elseif(src MATCHES "_avx512\\.cpp$")
      set_source_files_properties(${src} PROPERTIES COMPILE_OPTIONS "${RECAP_AVX512_FLAGS}")
    elseif(src MATCHES "_avx2\\.cpp$")
      set_source_files_properties(${src} PROPERTIES COMPILE_OPTIONS "${RECAP_AVX2_FLAGS}")
    endif()
  endforeach()
  target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR} ${PROJECT_SOURCE_DIR}/include)
  target_link_libraries(${target} PUBLIC recap_deps)
endfunction()
