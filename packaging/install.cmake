# packaging/install.cmake: the install layout (cmake --install) and the Debian
# package (cpack -G DEB), included by CMakeLists.txt. Layout under the prefix:
#   bin/ragops                          the command
#   lib/ragops/ragops-embed-server      exec'ed by `ragops embed-server`
#   share/ragops/lua                    the Lua runtime (found from bin/../share/ragops)
#   share/ragops/plans                  the plans the commands use by default
#   share/ragops/plans/exemplos         the same plans, to copy into the operator's folder
#   share/ragops/config.example.lua
#   share/doc/ragops                    README, docs/, config.example.lua, packaging examples
#   lib/systemd/system                  ragops-sync.service, ragops-backfill.{service,timer}
# There is no man page: `ragops --help` and `ragops help COMMAND` are the reference.

install(TARGETS ragops RUNTIME DESTINATION bin)
install(TARGETS ragops-embed-server RUNTIME DESTINATION lib/ragops)
install(DIRECTORY lua/ DESTINATION share/ragops/lua)
install(DIRECTORY plans/ DESTINATION share/ragops/plans FILES_MATCHING PATTERN "*.lua")
install(DIRECTORY plans/ DESTINATION share/ragops/plans/exemplos FILES_MATCHING PATTERN "*.lua")
install(FILES config.example.lua DESTINATION share/ragops)
install(FILES README.md config.example.lua DESTINATION share/doc/ragops)
install(DIRECTORY docs/ DESTINATION share/doc/ragops/docs)
install(DIRECTORY packaging/systemd/ DESTINATION lib/systemd/system
        FILES_MATCHING PATTERN "*.service" PATTERN "*.timer")
install(DIRECTORY packaging/systemd packaging/container packaging/kubernetes packaging/compose
        DESTINATION share/doc/ragops/exemplos)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME ragops)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_PACKAGE_CONTACT "Equipe ragops <ragops@localhost>")
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "Equipe ragops <ragops@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "backfill, reindexação e sincronização do PostgreSQL para RAG (pgvector)")
# The first line of the Description is the summary above; these are the rest.
set(CPACK_PACKAGE_DESCRIPTION "Motor em C (libuv, libpq, libcurl, LuaJIT) guiado por planos em Lua: lê
tabelas do PostgreSQL, gera embeddings num provedor compatível com a OpenAI
e grava os documentos numa tabela no formato do pgvector; retoma do
checkpoint, segue as mudanças (ragops sync --follow) e expõe métricas.
Inclui unidades systemd (ragops-sync.service, ragops-backfill.timer) e
a documentação em /usr/share/doc/ragops (docs/instalacao.md).")
set(CPACK_DEBIAN_PACKAGE_SECTION database)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
# Shared libraries from dpkg-shlibdeps (libluajit, libuv1, libpq5, libcurl4,
# libjansson4, libxxhash0, zlib1g, libc6); lua-cjson is a Lua C module that
# LuaJIT loads by require from /usr/lib/<triplet>/lua/5.1/cjson.so.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "lua-cjson")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "postgresql-15-pgvector")
include(CPack)
