# recap_layer(NAME dir): an OBJECT library of every .cpp in the directory (recursively).
# Files named *_avx2.cpp / *_avx512.cpp get their ISA flags here and only here, so the
# rest of the binary stays portable x86-64 and the kernels are picked at run time.
set(RECAP_AVX2_FLAGS -mavx2 -mfma -mf16c -mbmi2)
set(RECAP_AVX512_FLAGS -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx512bf16
    -mavx2 -mfma -mf16c -mbmi2)
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
    if(src MATCHES "_avx512\\.cpp$")
      set_source_files_properties(${src} PROPERTIES COMPILE_OPTIONS "${RECAP_AVX512_FLAGS}")
    elseif(src MATCHES "_avx2\\.cpp$")
      set_source_files_properties(${src} PROPERTIES COMPILE_OPTIONS "${RECAP_AVX2_FLAGS}")
    endif()
  endforeach()
  target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR} ${PROJECT_SOURCE_DIR}/include)
  target_link_libraries(${target} PUBLIC recap_deps)
endfunction()
