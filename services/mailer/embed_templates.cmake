# Generates a C file that embeds the mail templates (templates/<name>.subject,
# .txt, .html) as a mail_template_file_t table, so the binary needs no files
# at run time and the wording stays in template files, not C literals.
#
# cmake -DDIR=<templates dir> -DOUT=<file.c> -P embed_templates.cmake
file(GLOB files RELATIVE "${DIR}" "${DIR}/*.subject" "${DIR}/*.txt" "${DIR}/*.html")
list(SORT files)
set(body "/* Generated from ${DIR} by services/mailer/embed_templates.cmake. Do not edit. */\n")
string(APPEND body "#include <stddef.h>\n#include \"render.h\"\n\n")
set(table "")
set(i 0)
foreach(f IN LISTS files)
  if(NOT f MATCHES "^[a-z0-9_]+\\.(subject|txt|html)$")
    message(FATAL_ERROR "template ${f}: name it words.subject|txt|html")
  endif()
  file(READ "${DIR}/${f}" hex HEX)
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
  string(APPEND body "static const char t${i}[] = {${bytes}0x00};\n")
  string(APPEND table "    {\"${f}\", t${i}},\n")
  math(EXPR i "${i} + 1")
endforeach()
if(i EQUAL 0)
  message(FATAL_ERROR "no templates in ${DIR}")
endif()
string(APPEND body "\nconst mail_template_file_t mail_template_files[] = {\n${table}};\n")
string(APPEND body "const size_t mail_template_files_count = ${i};\n")
file(WRITE "${OUT}.tmp" "${body}")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
