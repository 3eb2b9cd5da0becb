# Injected with -DCMAKE_PROJECT_INCLUDE=<this file> by scripts/build_vision_msgs.sh.
#
# The ROS 2 pip wheels were built in a manylinux image: their exported
# <pkg>::<pkg>__rosidl_generator_py targets name that image's Python and numpy
# include directories (/opt/python/cp3XX-cp3XX/...). CMake refuses an imported
# target with a missing include directory at generate time. At the end of the
# configure step, every such missing directory is pointed at the running
# Python's (and its numpy's) include directory; existing paths are left alone.

execute_process(
  COMMAND "${Python3_EXECUTABLE}" -c
    "import sysconfig, numpy; print(sysconfig.get_paths()['include']); print(numpy.get_include())"
  OUTPUT_VARIABLE _msr_py_includes
  OUTPUT_STRIP_TRAILING_WHITESPACE
  RESULT_VARIABLE _msr_py_result)
if(NOT _msr_py_result EQUAL 0)
  message(FATAL_ERROR "pip_wheel_includes: ${Python3_EXECUTABLE} cannot report its include directories (numpy missing?)")
endif()
string(REPLACE "\n" ";" _msr_py_includes "${_msr_py_includes}")
list(GET _msr_py_includes 0 MSR_PYTHON_INCLUDE_DIR)
list(GET _msr_py_includes 1 MSR_NUMPY_INCLUDE_DIR)

function(msr_retarget_wheel_includes)
  get_property(_targets DIRECTORY "${CMAKE_SOURCE_DIR}" PROPERTY IMPORTED_TARGETS)
  foreach(_target IN LISTS _targets)
    get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _dirs)
      continue()
    endif()
    set(_fixed "")
    set(_changed FALSE)
    foreach(_dir IN LISTS _dirs)
      if(NOT EXISTS "${_dir}" AND _dir MATCHES "/include/python3\\.[0-9]+$")
        list(APPEND _fixed "${MSR_PYTHON_INCLUDE_DIR}")
        set(_changed TRUE)
      elseif(NOT EXISTS "${_dir}" AND _dir MATCHES "/numpy/(_core|core)/include$")
        list(APPEND _fixed "${MSR_NUMPY_INCLUDE_DIR}")
        set(_changed TRUE)
      else()
        list(APPEND _fixed "${_dir}")
      endif()
    endforeach()
    if(_changed)
      list(REMOVE_DUPLICATES _fixed)
      set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_fixed}")
    endif()
  endforeach()
endfunction()

# runs after the project's CMakeLists.txt has created all its imported targets
cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL msr_retarget_wheel_includes)
