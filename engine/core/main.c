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

/* Where the runtime was looked for: up to three places, for the error. */
typedef struct {
    char places[3][8400];
    int count;
} home_search;

/* True when home/lua/ragops/cli/init.lua exists; records home in search. */
static int home_usable(home_search *search, const char *home)
{
    char path[8600];
    if (search->count < 3)
        snprintf(search->places[search->count++], sizeof search->places[0], "%s", home);
    snprintf(path, sizeof path, "%s/lua/ragops/cli/init.lua", home);
    return access(path, R_OK) == 0;
}

/* True when dir and other name the same existing folder. */
static int same_dir(const char *dir, const char *other)
{
    char a[PATH_MAX], b[PATH_MAX];
    return realpath(dir, a) != NULL && realpath(other, b) != NULL && strcmp(a, b) == 0;
}

/* Finds the ragops home (the folder holding lua/): $RAGOPS_HOME when set (it
 * must hold the runtime: a home without it is an error, never skipped);
 * else <prefix>/share/ragops beside the binary's <prefix>/bin; else, only for
 * a binary in this source tree's build folder, the source tree. Writes it into
 * home; on failure search lists every place looked at. */
static int find_home(char *home, size_t size, home_search *search)
{
    char exe[4096], candidate[8400];
    size_t exe_len = sizeof exe;
    const char *env_home = getenv("RAGOPS_HOME");
    search->count = 0;
    if (env_home && *env_home) {
        if (!home_usable(search, env_home))
            return -1;
        snprintf(home, size, "%s", env_home);
        return 0;
    }
    if (uv_exepath(exe, &exe_len) != 0 || strrchr(exe, '/') == NULL)
        return -1;
    *strrchr(exe, '/') = '\0';
    /* <prefix>/bin/ragops -> <prefix>/share/ragops */
    char *bin_slash = strrchr(exe, '/');
    snprintf(candidate, sizeof candidate, "%.*s/share/ragops",
             bin_slash ? (int)(bin_slash - exe) : 0, exe);
    if (home_usable(search, candidate)) {
        snprintf(home, size, "%s", candidate);
        return 0;
    }
    if (same_dir(exe, RAGOPS_BUILD_DIR) && home_usable(search, RAGOPS_SOURCE_DIR)) {
        snprintf(home, size, "%s", RAGOPS_SOURCE_DIR);
        return 0;
    }
    return -1;
}

/* The pt-BR error for a runtime not found, naming every place looked at. */
static void report_missing_home(const home_search *search)
{
    const char *env_home = getenv("RAGOPS_HOME");
    if (env_home && *env_home) {
        fprintf(stderr, "ragops: RAGOPS_HOME=%s não contém o runtime Lua (procurei %s/lua/ragops/cli/init.lua); "
                        "RAGOPS_HOME é a pasta da instalação (com lua/), não a dos seus planos: "
                        "para os planos use plans.dir na configuração ou RAGOPS_PLANS, "
                        "ou remova RAGOPS_HOME para usar a instalação\n", env_home, env_home);
        return;
    }
    fprintf(stderr, "ragops: não encontrei o runtime Lua (lua/ragops/cli/init.lua); procurei em:");
    for (int i = 0; i < search->count; i++)
        fprintf(stderr, " %s/lua%s", search->places[i], i + 1 < search->count ? "," : "");
    if (search->count == 0)
        fprintf(stderr, " (nenhum lugar: o caminho do próprio executável não pôde ser lido)");
    fprintf(stderr, "; reinstale o pacote (o runtime fica em <prefixo>/share/ragops, ao lado de "
                    "<prefixo>/bin/ragops) ou defina RAGOPS_HOME com a pasta que contém lua/\n");
}

#define EMBED_SERVER_BIN "ragops-embed-server"

/* Replaces the process with ragops-embed-server, found only relative to this
 * binary: beside it (the build folder) or in <prefix>/lib/ragops (installed),
 * passing argv on (argv[0] is "embed-server"). Returns only on failure: 2,
 * with a pt-BR message naming where it looked. */
static int exec_embed_server(char **argv)
{
    char exe[4096], paths[2][4300];
    size_t exe_len = sizeof exe;
    if (uv_exepath(exe, &exe_len) != 0 || strrchr(exe, '/') == NULL) {
        fprintf(stderr, "ragops: não consegui ler o caminho do próprio executável para achar o %s\n",
                EMBED_SERVER_BIN);
        return 2;
    }
    *strrchr(exe, '/') = '\0';
    snprintf(paths[0], sizeof paths[0], "%s/%s", exe, EMBED_SERVER_BIN);
    snprintf(paths[1], sizeof paths[1], "%s/../lib/ragops/%s", exe, EMBED_SERVER_BIN);
    for (size_t i = 0; i < 2; i++) {
        if (access(paths[i], X_OK) == 0) {
            argv[0] = paths[i];
            execv(paths[i], argv);
            fprintf(stderr, "ragops: não foi possível executar %s: %s\n", paths[i], strerror(errno));
            return 2;
        }
    }
    fprintf(stderr, "ragops: o embed-server não foi encontrado; procurei em %s e %s; "
                    "compile-o (make build) ou reinstale o pacote\n", paths[0], paths[1]);
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
    home_search search;
    if (find_home(home, sizeof home, &search) != 0) {
        report_missing_home(&search);
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
