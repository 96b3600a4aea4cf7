# Generates a C++ source holding the text of the templates (so the binary needs no data files).
file(READ "${SRC}/dovecot/99-mailward-hardening-2.3.conf" T23)
file(READ "${SRC}/dovecot/99-mailward-hardening-2.4.conf" T24)
file(WRITE "${OUT}.tmp" "// Generated from templates/ by cmake/embed.cmake. Do not edit.\n"
  "namespace mw::templates {\n"
  "extern const char kDovecotHardening23[] = R\"MWTPL(${T23})MWTPL\";\n"
  "extern const char kDovecotHardening24[] = R\"MWTPL(${T24})MWTPL\";\n"
  "}\n")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
