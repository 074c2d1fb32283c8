# CheckReadme.cmake: README.md quotes the snippet programs of docs/snippets exactly.
#
#   cmake [-DREADME=<path to README.md>] -P docs/snippets/CheckReadme.cmake
#
# The rule, both ways:
#   - Every ```cpp block of the README sits directly under a marker naming its program, the path
#     relative to the README:
#         <!-- snippet: docs/snippets/matmul.cpp -->
#         ```cpp
#   - The block equals the program's quoted part: the lines between "// [readme]" and
#     "// [/readme]", each region dedented by its smallest indentation, and several regions
#     joined by one empty line (so the #include can be quoted without main's setup).
#   - Every .cpp file beside this script is quoted at least once.
# A region inside a function sits between "// clang-format off" and "// clang-format on", so that
# its hand-aligned comments reach the README as written.
# Each program runs as its own ctest test, so a snippet in the README is a snippet that compiles
# and does what its comments say. On a mismatch the script fails, naming the snippet and the
# first line where the README and the file differ.
cmake_minimum_required(VERSION 3.14)

if(NOT DEFINED README)
  get_filename_component(README "${CMAKE_CURRENT_LIST_DIR}/../../README.md" ABSOLUTE)
endif()
if(NOT EXISTS "${README}")
  message(FATAL_ERROR "CheckReadme: ${README} does not exist")
endif()
get_filename_component(_root "${README}" DIRECTORY)
get_filename_component(_readme_name "${README}" NAME)

# Splits `text` into lines: sets <prefix>_count and <prefix>_1 ... <prefix>_<count> in the
# caller. Lines live in variables of their own, never in CMake lists, so the semicolons and
# brackets of C++ survive.
function(_gsq_split_lines text prefix)
  set(_n 0)
  set(_rest "${text}")
  while(NOT "${_rest}" STREQUAL "")
    math(EXPR _n "${_n} + 1")
    string(FIND "${_rest}" "\n" _at)
    if(_at EQUAL -1)
      set(_line "${_rest}")
      set(_rest "")
    else()
      string(SUBSTRING "${_rest}" 0 ${_at} _line)
      math(EXPR _at "${_at} + 1")
      string(SUBSTRING "${_rest}" ${_at} -1 _rest)
    endif()
    string(REGEX REPLACE "\r$" "" _line "${_line}")
    set(${prefix}_${_n} "${_line}" PARENT_SCOPE)
  endwhile()
  set(${prefix}_count ${_n} PARENT_SCOPE)
endfunction()

# The quoted part of snippet file `path` (relative to the README): sets <prefix>_count,
# <prefix>_<i> (the line) and <prefix>_at_<i> (its line number in the file, 0 for the empty
# line that joins two regions), or <prefix>_error.
function(_gsq_quoted_part path prefix)
  set(${prefix}_error "" PARENT_SCOPE)
  if(NOT EXISTS "${_root}/${path}")
    set(${prefix}_error "${path} does not exist" PARENT_SCOPE)
    return()
  endif()
  file(READ "${_root}/${path}" _text)
  _gsq_split_lines("${_text}" _src)
  set(_open "^[ \t]*// \\[readme\\][ \t]*$")
  set(_close "^[ \t]*// \\[/readme\\][ \t]*$")
  set(_out 0)
  set(_first "")
  set(_regions 0)
  if(_src_count EQUAL 0)
    set(${prefix}_error "${path} is empty" PARENT_SCOPE)
    return()
  endif()
  foreach(_i RANGE 1 ${_src_count})
    set(_line "${_src_${_i}}")
    if("${_line}" MATCHES "${_open}")
      if(NOT _first STREQUAL "")
        set(${prefix}_error "${path}:${_i}: // [readme] inside the region opened at line ${_first}"
            PARENT_SCOPE)
        return()
      endif()
      math(EXPR _first "${_i} + 1")
    elseif("${_line}" MATCHES "${_close}")
      if(_first STREQUAL "")
        set(${prefix}_error "${path}:${_i}: // [/readme] without a // [readme] above it"
            PARENT_SCOPE)
        return()
      endif()
      math(EXPR _last "${_i} - 1")
      # The region's smallest indentation, over its non-blank lines.
      set(_indent 100000)
      if(_last GREATER_EQUAL _first)
        foreach(_j RANGE ${_first} ${_last})
          if(NOT "${_src_${_j}}" MATCHES "^[ \t]*$")
            string(REGEX REPLACE "^ +" "" _body "${_src_${_j}}")
            string(LENGTH "${_src_${_j}}" _width)
            string(LENGTH "${_body}" _body_width)
            math(EXPR _width "${_width} - ${_body_width}")
            if(_width LESS _indent)
              set(_indent ${_width})
            endif()
          endif()
        endforeach()
      endif()
      if(_regions GREATER 0)
        math(EXPR _out "${_out} + 1")
        set(${prefix}_${_out} "" PARENT_SCOPE)
        set(${prefix}_at_${_out} 0 PARENT_SCOPE)
      endif()
      math(EXPR _regions "${_regions} + 1")
      if(_last GREATER_EQUAL _first)
        foreach(_j RANGE ${_first} ${_last})
          set(_quoted "")
          if(NOT "${_src_${_j}}" MATCHES "^[ \t]*$")
            string(SUBSTRING "${_src_${_j}}" ${_indent} -1 _quoted)
          endif()
          math(EXPR _out "${_out} + 1")
          set(${prefix}_${_out} "${_quoted}" PARENT_SCOPE)
          set(${prefix}_at_${_out} ${_j} PARENT_SCOPE)
        endforeach()
      endif()
      set(_first "")
    endif()
  endforeach()
  if(NOT _first STREQUAL "")
    math(EXPR _open_line "${_first} - 1")
    set(${prefix}_error "${path}:${_open_line}: // [readme] is never closed by // [/readme]"
        PARENT_SCOPE)
  elseif(_regions EQUAL 0)
    set(${prefix}_error "${path} has no // [readme] ... // [/readme] region to quote" PARENT_SCOPE)
  endif()
  set(${prefix}_count ${_out} PARENT_SCOPE)
endfunction()

# Prints one problem (its arguments concatenated, each kept whole) and counts it.
set(_errors 0)
function(_gsq_error)
  set(_text "")
  math(EXPR _last "${ARGC} - 1")
  foreach(_i RANGE 0 ${_last})
    string(APPEND _text "${ARGV${_i}}")
  endforeach()
  message("${_text}\n")
  math(EXPR _count "${_errors} + 1")
  set(_errors ${_count} PARENT_SCOPE)
endfunction()

file(READ "${README}" _readme_text)
_gsq_split_lines("${_readme_text}" _md)

set(_quoted_files "")
set(_blocks 0)
set(_pending "")     # the path of a marker on the previous line
set(_pending_at 0)
set(_in_block OFF)   # inside a ```cpp block
set(_in_other OFF)   # inside another fenced block (```sh, ```), where nothing is checked
foreach(_n RANGE 1 ${_md_count})
  set(_line "${_md_${_n}}")
  if(_in_block)
    if("${_line}" MATCHES "^```[ \t]*$")
      set(_in_block OFF)
      # Compare the block (README lines _block_first.._n-1) with the file's quoted part.
      math(EXPR _block_count "${_n} - ${_block_first}")
      if(_block_path STREQUAL "")
        continue()
      endif()
      _gsq_quoted_part("${_block_path}" _want)
      if(NOT _want_error STREQUAL "")
        _gsq_error("${_readme_name}:${_block_marker}: ${_want_error}")
        continue()
      endif()
      set(_found OFF)
      set(_k 0)
      while(NOT _found AND (_k LESS _block_count OR _k LESS _want_count))
        math(EXPR _k "${_k} + 1")
        math(EXPR _md_line "${_block_first} + ${_k} - 1")
        set(_found ON)
        if(_k GREATER _want_count)
          set(_file_side "${_block_path}: (the quoted part has ended)")
        elseif(_want_at_${_k} EQUAL 0)
          set(_file_side "${_block_path} (the empty line joining two regions): ${_want_${_k}}")
        else()
          set(_file_side "${_block_path}:${_want_at_${_k}}: ${_want_${_k}}")
        endif()
        if(_k GREATER _block_count)
          set(_readme_side "${_readme_name}:${_md_line}: (the block has ended)")
        else()
          set(_readme_side "${_readme_name}:${_md_line}: ${_md_${_md_line}}")
          if(_k LESS_EQUAL _want_count AND "${_md_${_md_line}}" STREQUAL "${_want_${_k}}")
            set(_found OFF)
          endif()
        endif()
      endwhile()
      if(_found)
        _gsq_error("${_readme_name}:${_block_marker}: the block quoting ${_block_path} differs "
                   "from the file's // [readme] part, first at line ${_k} of the block:\n"
                   "  ${_readme_side}\n  ${_file_side}\n"
                   "Copy the file's quoted part into the README block (or, if the README is "
                   "right, fix the file and rerun its test).")
      endif()
    endif()
    continue()
  endif()
  if(_in_other)
    if("${_line}" MATCHES "^```[ \t]*$")
      set(_in_other OFF)
    endif()
    continue()
  endif()
  if("${_line}" MATCHES "^```(cpp|c\\+\\+|C\\+\\+|cc|cxx)[ \t]*$")
    math(EXPR _blocks "${_blocks} + 1")
    set(_in_block ON)
    math(EXPR _block_first "${_n} + 1")
    if(_pending STREQUAL "")
      _gsq_error("${_readme_name}:${_n}: a C++ block without a snippet marker. Put its code in a "
                 "program under docs/snippets/ (between // [readme] and // [/readme]) and write "
                 "<!-- snippet: docs/snippets/<name>.cpp --> directly above the fence.")
      set(_block_path "")
    else()
      set(_block_path "${_pending}")
      set(_block_marker ${_pending_at})
      list(APPEND _quoted_files "${_pending}")
    endif()
    set(_pending "")
    continue()
  endif()
  if(NOT _pending STREQUAL "")
    _gsq_error("${_readme_name}:${_pending_at}: the marker for ${_pending} must sit directly "
               "above a ```cpp fence")
    set(_pending "")
  endif()
  if("${_line}" MATCHES "^```")
    set(_in_other ON)
  elseif("${_line}" MATCHES "^<!-- snippet: ([^ ]+) -->[ \t]*$")
    set(_pending "${CMAKE_MATCH_1}")
    set(_pending_at ${_n})
  elseif("${_line}" MATCHES "<!-- *snippet")
    _gsq_error("${_readme_name}:${_n}: a snippet marker must read exactly "
               "<!-- snippet: docs/snippets/<name>.cpp --> on a line of its own")
  endif()
endforeach()
if(_in_block OR _in_other)
  _gsq_error("${_readme_name}: a code block is never closed")
endif()
if(NOT _pending STREQUAL "")
  _gsq_error("${_readme_name}:${_pending_at}: the marker for ${_pending} must sit directly above "
             "a ```cpp fence")
endif()

# Every program here is quoted: a program the README no longer shows is dead weight.
file(GLOB _programs "${CMAKE_CURRENT_LIST_DIR}/*.cpp")
list(SORT _programs)
foreach(_program IN LISTS _programs)
  file(RELATIVE_PATH _rel "${_root}" "${_program}")
  if(NOT _rel IN_LIST _quoted_files)
    _gsq_error("${_rel} is not quoted by ${_readme_name}: quote it under a "
               "<!-- snippet: ${_rel} --> marker, or delete it")
  endif()
endforeach()

if(_errors GREATER 0)
  message(FATAL_ERROR "${_readme_name} and docs/snippets disagree (${_errors} problem(s) above)")
endif()
list(REMOVE_DUPLICATES _quoted_files)
list(LENGTH _quoted_files _files)
message(STATUS "${_readme_name}: ${_blocks} C++ blocks, each the quoted part of its program "
               "(${_files} programs in docs/snippets)")
