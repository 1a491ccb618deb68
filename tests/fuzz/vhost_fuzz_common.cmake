# Shared set-up of the vhost fuzzers: the vhost library and the in-test
# front-end compiled again with ASan/UBSan and libFuzzer coverage.
include_guard(GLOBAL)
if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  message(FATAL_ERROR "XVIO_BUILD_FUZZ needs clang: configure with "
                      "-DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14")
endif()
find_package(absl REQUIRED)
set_property(GLOBAL PROPERTY XVIO_FUZZ_FLAGS -fsanitize=address,undefined
             -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g)
get_property(fuzz_flags GLOBAL PROPERTY XVIO_FUZZ_FLAGS)
set(vhost_dir ${PROJECT_SOURCE_DIR}/agent/vhost)
add_library(xvio_vhost_fuzzing STATIC
  ${vhost_dir}/guest_memory.cc ${vhost_dir}/message_socket.cc ${vhost_dir}/net_device.cc
  ${vhost_dir}/virtqueue.cc ${PROJECT_SOURCE_DIR}/tests/vhost/test_frontend.cc)
xvio_target_defaults(xvio_vhost_fuzzing)
target_compile_options(xvio_vhost_fuzzing PRIVATE ${fuzz_flags} -fsanitize=fuzzer-no-link)
target_link_libraries(xvio_vhost_fuzzing PUBLIC absl::status absl::statusor absl::str_format
                                               Threads::Threads)

function(xvio_add_vhost_fuzzer name source)
  get_property(fuzz_flags GLOBAL PROPERTY XVIO_FUZZ_FLAGS)
  add_executable(${name} ${source})
  xvio_target_defaults(${name})
  target_compile_options(${name} PRIVATE ${fuzz_flags} -fsanitize=fuzzer)
  target_link_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(${name} PRIVATE xvio_vhost_fuzzing)
endfunction()
