/*
 * main.c: the `ragops` executable. `ragops embed-server ...` execs the
 * local embedding server, its own binary (tools/embed-server); every other
 * command is dispatched by the Lua CLI (lua/ragops/cli/init.lua) running in the
 * main coroutine of the bridge.
 */
#include "bridge.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <signal.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

/* True when dir/ragops/cli/init.lua exists. */
static int lua_dir_usable(const char *dir)
{
    char path[8500];
    snprintf(path, sizeof path, "%s/ragops/cli/init.lua", dir);
    return access(path, R_OK) == 0;
}

/* Finds the ragops home (the folder holding lua/ and plans/): $RAGOPS_HOME,
 * the source tree next to the build folder, the install prefix, or the
 * source folder the binary was built from. Writes it into home. */
static int find_home(char *home, size_t size)
{
    char exe[4096], candidate[8400];
    size_t exe_len = sizeof exe;
    const char *env_home = getenv("RAGOPS_HOME");
    if (env_home && *env_home) {
        snprintf(candidate, sizeof candidate, "%s/lua", env_home);
        if (lua_dir_usable(candidate)) {
            snprintf(home, size, "%s", env_home);
            return 0;
        }
    }
    if (uv_exepath(exe, &exe_len) == 0) {
        char *slash = strrchr(exe, '/');
        if (slash)
            *slash = '\0';
        const char *relative[] = {"..", "../share/ragops"};
        for (size_t i = 0; i < sizeof relative / sizeof *relative; i++) {
            snprintf(candidate, sizeof candidate, "%s/%s/lua", exe, relative[i]);
            if (lua_dir_usable(candidate)) {
                snprintf(home, size, "%s/%s", exe, relative[i]);
                return 0;
            }
        }
    }
    const char *fixed[] = {RAGOPS_INSTALL_DATADIR, RAGOPS_SOURCE_DIR};
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) {
        snprintf(candidate, sizeof candidate, "%s/lua", fixed[i]);
        if (lua_dir_usable(candidate)) {
            snprintf(home, size, "%s", fixed[i]);
            return 0;
        }
    }
    return -1;
}

#define EMBED_SERVER_BIN "ragops-embed-server"

/* Replaces the process with ragops-embed-server (next to this binary, else
 * in the install bin dir), passing argv on (argv[0] is "embed-server").
 * Returns only on failure: 2, with a pt-BR message. */
static int exec_embed_server(char **argv)
{
    char exe[4096], path[4200];
    size_t exe_len = sizeof exe;
    const char *dirs[2] = {NULL, RAGOPS_INSTALL_BINDIR};
    if (uv_exepath(exe, &exe_len) == 0) {
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            dirs[0] = exe;
        }
    }
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
        if (dirs[i] == NULL)
            continue;
        snprintf(path, sizeof path, "%s/%s", dirs[i], EMBED_SERVER_BIN);
        if (access(path, X_OK) == 0) {
            argv[0] = path;
            execv(path, argv);
            fprintf(stderr, "ragops: não foi possível executar %s: %s\n", path, strerror(errno));
            return 2;
        }
    }
    fprintf(stderr, "ragops: o embed-server (%s) não foi encontrado ao lado do ragops nem em %s; "
                    "compile-o (make build) ou instale-o\n", EMBED_SERVER_BIN, RAGOPS_INSTALL_BINDIR);
    return 2;
}

int main(int argc, char **argv)
{
#ifdef __GLIBC__
    /* One malloc arena: the loop thread does nearly all the work, and blocks
     * freed here that other threads (curl's resolver, libuv's pool) had
     * allocated kept extra arenas growing (measurements: docs/desempenho.md,
     * "Memória com 1.000.000 de documentos"). */
    mallopt(M_ARENA_MAX, 1);
#endif
    /* A closed pipe (ragops ... | head) or a dropped HTTP peer must come back
     * as a write error, not kill the process mid-batch. */
    signal(SIGPIPE, SIG_IGN);
    if (argc >= 2 && strcmp(argv[1], "embed-server") == 0)
        return exec_embed_server(argv + 1);

    char home[8400], lua_dir[8500];
    if (find_home(home, sizeof home) != 0) {
        fprintf(stderr, "ragops: não encontrei o runtime Lua (lua/ragops/cli/init.lua); "
                        "defina RAGOPS_HOME com a pasta que contém lua/ e plans/\n");
        return 2;
    }
    char resolved[PATH_MAX];
    if (realpath(home, resolved) != NULL)
        snprintf(home, sizeof home, "%s", resolved);
    snprintf(lua_dir, sizeof lua_dir, "%s/lua", home);
    lua_State *L = rg_bridge_open(lua_dir);
    if (L == NULL) {
        fprintf(stderr, "ragops: memória insuficiente para o estado Lua\n");
        return 2;
    }
    lua_pushstring(L, home);
    lua_setglobal(L, "RAGOPS_HOME");

    int status;
    lua_getglobal(L, "require");
    lua_pushliteral(L, "ragops.cli");
    if (lua_pcall(L, 1, 1, 0) != 0) {
        fprintf(stderr, "ragops: falha ao carregar o CLI: %s\n", lua_tostring(L, -1));
        status = 2;
    } else {
        lua_getfield(L, -1, "main");
        status = rg_bridge_run_main(L, argc - 1, argv + 1);
    }
    rg_bridge_close(L);
    return status;
}
