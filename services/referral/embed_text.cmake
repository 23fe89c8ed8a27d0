# Embeds one text file as a NUL-terminated C array:
# cmake -DIN=<file> -DOUT=<file.c> -DNAME=<c identifier> -P embed_text.cmake
file(READ "${IN}" hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
set(body "/* Generated from ${IN} by services/referral/embed_text.cmake. Do not edit. */\n")
string(APPEND body "const char ${NAME}[] = {${bytes}0x00};\n")
file(WRITE "${OUT}.tmp" "${body}")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
