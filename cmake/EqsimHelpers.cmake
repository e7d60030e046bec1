# eqsim_glob_library(<name> <STATIC|...> DIRS <dir>... ) : a library made of every .cc in the
# given folders except *_main.cc, so parallel work on one module never edits the same list.
function(eqsim_glob_sources out)
  set(srcs)
  foreach(dir ${ARGN})
    file(GLOB found CONFIGURE_DEPENDS "${CMAKE_CURRENT_SOURCE_DIR}/${dir}/*.cc")
    list(FILTER found EXCLUDE REGEX "_main\\.cc$")
    list(APPEND srcs ${found})
  endforeach()
  set(${out} ${srcs} PARENT_SCOPE)
endfunction()

# eqsim_add_test(<name> SOURCES a.cc ... LIBS lib ... [LABELS l ...] [TIMEOUT s])
function(eqsim_add_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} GTest::gtest GTest::gmock GTest::gtest_main)
  target_compile_definitions(${name} PRIVATE
    EQSIM_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
    EQSIM_BINARY_DIR="${PROJECT_BINARY_DIR}"
    EQSIM_SHARED_DIR="${PROJECT_SOURCE_DIR}/../shared")
  add_test(NAME ${name} COMMAND ${name})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  set_tests_properties(${name} PROPERTIES TIMEOUT ${T_TIMEOUT} LABELS "${T_LABELS}"
    ENVIRONMENT "EQSIM_BIN_DIR=${PROJECT_BINARY_DIR}/bin")
endfunction()
