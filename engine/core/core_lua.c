/*
 * core_lua.c: the `ragops.core` module: clocks, the process id, terminal
 * check, file kind, a folder's entries, the content hash and the UTF-8 checks here; the
 * scheduler's primitives (bridge.c), signals (signals.c) and the sandbox's
 * guards (guards.c) registered with them.
 */
#include "core_internal.h"
#include "utf8.h"
#include "vecbatch.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack (core.hash) */
#include <xxhash.h>

/* core.now() -> milliseconds of monotonic time (high resolution). */
static int core_now(lua_State *L)
{
    lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e6);
    return 1;
}

/* core.wallclock() -> seconds since the epoch, with microseconds. */
static int core_wallclock(lua_State *L)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    lua_pushnumber(L, (lua_Number)tv.tv_sec + tv.tv_usec / 1e6);
    return 1;
}

/* core.process_id() -> "hostname:pid", naming this process as a lease owner. */
static int core_process_id(lua_State *L)
{
    char host[256];
    size_t size = sizeof host;
    if (uv_os_gethostname(host, &size) != 0)
        snprintf(host, sizeof host, "desconhecido");
    lua_pushfstring(L, "%s:%d", host, (int)uv_os_getpid());
    return 1;
}

/* core.isatty(fd) -> true when fd (0, 1, 2) is a terminal: the progress
 * line is redrawn in place only there. */
static int core_isatty(lua_State *L)
{
    lua_Integer fd = luaL_checkinteger(L, 1);
    luaL_argcheck(L, fd >= 0 && fd <= 2, 1, "esperado 0, 1 ou 2");
    lua_pushboolean(L, uv_guess_handle((uv_file)fd) == UV_TTY);
    return 1;
}

/* core.file_kind(path) -> "file" | "directory" | "other", size in bytes;
 * or nil, errno text when path cannot be stat'ed. Plan and config files are
 * checked with it before they are opened (a FIFO would block the open, a
 * device or a huge file would be read whole). */
static int core_file_kind(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    if (stat(path, &st) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, strerror(errno));
        return 2;
    }
    lua_pushstring(L, S_ISREG(st.st_mode) ? "file" : S_ISDIR(st.st_mode) ? "directory" : "other");
    lua_pushnumber(L, (lua_Number)st.st_size);
    return 2;
}

/* core.list_dir(path) -> { name, ... } (unsorted, without "." and ".."),
 * at most RG_LIST_DIR_MAX entries; or nil, errno text. The plans folder is
 * listed with it (ragops.plan.locate: the plans found, the only plan). */
#define RG_LIST_DIR_MAX 4096
static int core_list_dir(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    DIR *dir = opendir(path);
    if (dir == NULL) {
        lua_pushnil(L);
        lua_pushstring(L, strerror(errno));
        return 2;
    }
    lua_newtable(L);
    int n = 0;
    struct dirent *entry;
    while (n < RG_LIST_DIR_MAX && (entry = readdir(dir)) != NULL) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
            continue;
        lua_pushstring(L, entry->d_name);
        lua_rawseti(L, -2, ++n);
    }
    closedir(dir);
    return 1;
}

/* core.hash(s, ...) -> 32 hex chars: XXH3-128 over the arguments, each
 * length-prefixed so ("ab","c") and ("a","bc") differ. Once per chunk: the
 * state lives on the stack and the hex is written by hand (no malloc, no
 * snprintf). */
static int core_hash(lua_State *L)
{
    static const char digits[] = "0123456789abcdef";
    int n = lua_gettop(L);
    XXH3_state_t state;
    XXH3_INITSTATE(&state);
    XXH3_128bits_reset(&state);
    for (int i = 1; i <= n; i++) {
        size_t len;
        const char *s = luaL_checklstring(L, i, &len);
        unsigned long long len64 = len;
        XXH3_128bits_update(&state, &len64, sizeof len64);
        XXH3_128bits_update(&state, s, len);
    }
    XXH128_hash_t h = XXH3_128bits_digest(&state);
    char hex[32];
    for (int k = 0; k < 16; k++) {
        hex[15 - k] = digits[(h.high64 >> (4 * k)) & 15];
        hex[31 - k] = digits[(h.low64 >> (4 * k)) & 15];
    }
    lua_pushlstring(L, hex, 32);
    return 1;
}

/* core.utf8_length(s) -> characters of s (bytes that do not continue a
 * UTF-8 sequence); per text sent, for the token calibration. */
static int core_utf8_length(lua_State *L)
{
    size_t len, continuation = 0;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &len);
    for (size_t i = 0; i < len; i++)
        continuation += (s[i] & 0xC0) == 0x80;
    lua_pushnumber(L, (lua_Number)(len - continuation));
    return 1;
}

/* core.utf8_check(s) -> true | false, kind ("nul" | "invalid_utf8"),
 * position (1-based byte): whether s is text PostgreSQL stores (valid
 * UTF-8, no NUL byte). Per document, before anything is embedded. */
static int core_utf8_check(lua_State *L)
{
    size_t len, i = 0;
    const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &len);
    while (i < len) {
        i += rg_utf8_plain_prefix(s + i, len - i);
        if (i == len || s[i] == 0)
            break;
        size_t n = rg_utf8_multibyte(s + i, len - i);
        if (n == 0)
            break;
        i += n;
    }
    if (i == len) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushboolean(L, 0);
    lua_pushstring(L, s[i] == 0 ? "nul" : "invalid_utf8");
    lua_pushnumber(L, (lua_Number)(i + 1));
    return 3;
}

int luaopen_ragops_core(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        {"now", core_now},           {"wallclock", core_wallclock},
        {"hash", core_hash},         {"process_id", core_process_id},
        {"isatty", core_isatty},     {"utf8_length", core_utf8_length},
        {"utf8_check", core_utf8_check},
        {"file_kind", core_file_kind},
        {"list_dir", core_list_dir},
        {NULL, NULL},
    };
    rg_vecbatch_register(L);
    lua_newtable(L);
    luaL_register(L, NULL, funcs);
    luaL_register(L, NULL, rg_core_sched_funcs);
    luaL_register(L, NULL, rg_core_signal_funcs);
    luaL_register(L, NULL, rg_core_guard_funcs);
    return 1;
}
