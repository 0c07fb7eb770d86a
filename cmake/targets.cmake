# The two target shapes every part of the tree uses, written once.

# gpurun_add_public_library(<name> <alias> [STATIC|SHARED] <sources>...): a library whose public
# headers are its folder's include/ (in the build tree and, installed, under the include dir),
# with the project's warnings.
function(gpurun_add_public_library name alias)
  add_library(${name} ${ARGN})
  add_library(${alias} ALIAS ${name})
  target_include_directories(${name} PUBLIC
    $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  gpurun_set_warnings(${name})
endfunction()

# gpurun_add_catch_tests(<name> LABEL <label> [TIMEOUT <s>] SOURCES <files>... [LIBS <libs>...]):
# a Catch2 test program (one shared main), each TEST_CASE registered with ctest under its name and
# label. --warn NoTests: a name ctest cannot pass back to Catch intact (';' splits it) fails
# instead of matching nothing and passing.
function(gpurun_add_catch_tests name)
  cmake_parse_arguments(A "" "LABEL;TIMEOUT" "SOURCES;LIBS" ${ARGN})
  if(NOT A_TIMEOUT)
    set(A_TIMEOUT 60)
  endif()
  add_executable(${name} ${A_SOURCES} $<TARGET_OBJECTS:gpurun_catch_main>)
  target_link_libraries(${name} PRIVATE ${A_LIBS} Catch2::Catch2)
  gpurun_set_warnings(${name})
  catch_discover_tests(${name} EXTRA_ARGS --warn NoTests PROPERTIES LABELS ${A_LABEL}
                       TIMEOUT ${A_TIMEOUT})
endfunction()
