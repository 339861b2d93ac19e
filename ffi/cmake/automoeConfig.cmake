# CMake package for automoe's C ABI, installed by scripts/install-ffi.sh next to lib/ and include/.
# Usage: find_package(automoe REQUIRED) then target_link_libraries(app PRIVATE automoe::automoe)
# (the shared library) or automoe::automoe_static.
get_filename_component(_automoe_prefix "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
include("${CMAKE_CURRENT_LIST_DIR}/automoeNativeLibs.cmake")  # sets AUTOMOE_NATIVE_LIBS

if(NOT TARGET automoe::automoe)
  add_library(automoe::automoe SHARED IMPORTED)
  set_target_properties(automoe::automoe PROPERTIES
    IMPORTED_LOCATION "${_automoe_prefix}/lib/libautomoe.so"
    INTERFACE_INCLUDE_DIRECTORIES "${_automoe_prefix}/include")
endif()
if(NOT TARGET automoe::automoe_static)
  add_library(automoe::automoe_static STATIC IMPORTED)
  set_target_properties(automoe::automoe_static PROPERTIES
    IMPORTED_LOCATION "${_automoe_prefix}/lib/libautomoe.a"
    INTERFACE_INCLUDE_DIRECTORIES "${_automoe_prefix}/include"
    INTERFACE_LINK_LIBRARIES "${AUTOMOE_NATIVE_LIBS}")
endif()
set(automoe_FOUND TRUE)
