# Build steps for BPF programs: clang -target bpf into an object, then a
# `bpftool gen skeleton` header in the build tree that C++ code includes.

find_program(XVIO_BPF_CLANG NAMES clang-14 clang REQUIRED)
find_program(XVIO_BPFTOOL NAMES bpftool PATHS /usr/sbin /sbin REQUIRED)

# xvio_add_bpf_program(<name> SOURCE <file.bpf.c> [DEPENDS <headers>...])
# Produces <build>/bpf/<name>.bpf.o and <build>/bpf/<name>.skel.h, and an
# INTERFACE library target xvio_bpf_<name> whose include path reaches the
# skeleton as "<name>.skel.h".
function(xvio_add_bpf_program name)
  cmake_parse_arguments(ARG "" "SOURCE" "DEPENDS" ${ARGN})
  set(out_dir ${PROJECT_BINARY_DIR}/bpf)
  set(object ${out_dir}/${name}.bpf.o)
  set(skeleton ${out_dir}/${name}.skel.h)
  get_filename_component(source ${ARG_SOURCE} ABSOLUTE)
  add_custom_command(
    OUTPUT ${object}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${out_dir}
    COMMAND ${XVIO_BPF_CLANG} -g -O2 -target bpf -mcpu=v3 -D__TARGET_ARCH_x86
            -Wall -Wextra -Werror -Wno-unused-parameter
            -I/usr/include/x86_64-linux-gnu -I${PROJECT_SOURCE_DIR}
            -c ${source} -o ${object}
    DEPENDS ${source} ${ARG_DEPENDS}
    COMMENT "BPF ${name}.bpf.o"
    VERBATIM)
  add_custom_command(
    OUTPUT ${skeleton}
    COMMAND sh -c "${XVIO_BPFTOOL} gen skeleton ${object} name ${name} > ${skeleton}.tmp && mv ${skeleton}.tmp ${skeleton}"
    DEPENDS ${object}
    COMMENT "BPF skeleton ${name}.skel.h"
    VERBATIM)
  add_custom_target(xvio_bpf_${name}_gen DEPENDS ${skeleton} ${object})
  add_library(xvio_bpf_${name} INTERFACE)
  add_dependencies(xvio_bpf_${name} xvio_bpf_${name}_gen)
  # SYSTEM: the generated skeleton is not project code (warnings, clang-tidy).
  target_include_directories(xvio_bpf_${name} SYSTEM INTERFACE ${out_dir})
  target_link_libraries(xvio_bpf_${name} INTERFACE PkgConfig::LIBBPF)
  set_property(GLOBAL APPEND PROPERTY XVIO_BPF_OBJECTS ${object})
endfunction()
