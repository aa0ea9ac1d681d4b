/*
 * test_cancel.c: cancellation of every async primitive through the bridge
 * (core.sleep, pg.connect, conn:query, http.request, client:embed): each
 * case parks a coroutine on a call that would wait a minute, cancels it with
 * core.cancel_all() and checks the results; one fresh state and a cleanly
 * closed loop per case (ASan/LSan report anything left behind).
 *
 * The silent server is a listening socket nobody accepts from: the kernel
 * completes the TCP handshake, the client sends its request and waits for an
 * answer that never comes. conn:query needs RAGOPS_TEST_DATABASE_URL.
 */
#include "core/bridge.h"
#include "test_assert.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

/* Runs code as the main coroutine with (port, db_url); returns its status. */
static int run_chunk(const char *code, int port, const char *db_url)
{
    char lua_dir[4096], port_text[16];
    const char *src = getenv("RAGOPS_SOURCE_DIR");
    snprintf(lua_dir, sizeof lua_dir, "%s/lua", src ? src : RAGOPS_SOURCE_DIR);
    snprintf(port_text, sizeof port_text, "%d", port);
    lua_State *L = rg_bridge_open(lua_dir);
    ASSERT(L != NULL);
    if (luaL_loadstring(L, code) != 0) {
        fprintf(stderr, "erro de sintaxe: %s\n", lua_tostring(L, -1));
        abort();
    }
    char *argv[] = {port_text, (char *)(db_url ? db_url : "")};
    int status = rg_bridge_run_main(L, 2, argv);
    rg_bridge_close(L);
    return status;
}

/* Opens a listening socket on 127.0.0.1 that never accepts; sets *port. */
static int silent_server(int *port)
{
    struct sockaddr_in addr;
    socklen_t len = sizeof addr;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT(fd >= 0);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT(bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0);
    ASSERT(listen(fd, 16) == 0);
    ASSERT(getsockname(fd, (struct sockaddr *)&addr, &len) == 0);
    *port = ntohs(addr.sin_port);
    return fd;
}

/* Lua prelude: wait(fn) runs fn in a coroutine, cancels everything once it is
 * parked and returns what fn returned. */
#define PRELUDE                                                                     \
    "local port, db_url = ...\n"                                                    \
    "local core = require 'ragops.core'\n"                                          \
    "local function wait(fn)\n"                                                     \
    "  local out, done = {}, false\n"                                               \
    "  core.spawn(function() out = { fn() }; done = true end)\n"                    \
    "  core.sleep(100)\n"                                                           \
    "  assert(not done, 'a chamada terminou antes do cancelamento')\n"              \
    "  local n = core.cancel_all()\n"                                               \
    "  assert(n == 1, 'cancel_all cancelou ' .. n .. ' chamadas')\n"                \
    "  while not done do core.sleep(5) end\n"                                       \
    "  return out\n"                                                                \
    "end\n"

int main(void)
{
    int port;
    int fd = silent_server(&port);
    const char *db_url = getenv("RAGOPS_TEST_DATABASE_URL");

    /* core.sleep: nil, "interrompido"; a sleep started afterwards is normal;
     * nothing pending means nothing cancelled. */
    ASSERT_INT_EQ(run_chunk(PRELUDE
        "local out = wait(function() return core.sleep(60000) end)\n"
        "assert(out[1] == nil and out[2] == 'interrompido', tostring(out[2]))\n"
        "assert(core.sleep(1) == true)\n"
        "assert(core.cancel_all() == 0)\n"
        "return 0", port, NULL), 0);

    /* The main coroutine itself can be the one cancelled (the signal path
     * cancels from another coroutine). */
    ASSERT_INT_EQ(run_chunk(PRELUDE
        "core.spawn(function() core.sleep(20); core.cancel_all() end)\n"
        "local ok, err = core.sleep(60000)\n"
        "return (ok == nil and err == 'interrompido') and 0 or 1", port, NULL), 0);

    /* pg.connect to a server that never answers. */
    ASSERT_INT_EQ(run_chunk(PRELUDE
        "local pg = require 'ragops.pg'\n"
        "local out = wait(function()\n"
        "  return pg.connect('host=127.0.0.1 port=' .. port .. ' connect_timeout=60') end)\n"
        "assert(out[1] == nil and out[2] == 'interrompido' and out[3] == '57014', tostring(out[2]))\n"
        "return 0", port, NULL), 0);

    /* http.request and client:embed to a server that never answers. */
    ASSERT_INT_EQ(run_chunk(PRELUDE
        "local http = require 'ragops.http'\n"
        "local out = wait(function()\n"
        "  return http.request { url = 'http://127.0.0.1:' .. port .. '/x', timeout_ms = 60000 } end)\n"
        "assert(out[1] == nil and out[2] == 'interrompido', tostring(out[2]))\n"
        "local client = require('ragops.embed').client { url = 'http://127.0.0.1:' .. port .. '/v1',\n"
        "  model = 'm', timeout_ms = 60000 }\n"
        "out = wait(function() return client:embed({ 'texto' }) end)\n"
        "assert(out[1] == nil and out[2] == 'interrompido', tostring(out[2]))\n"
        "assert(out[3].class == 'cancelled', tostring(out[3].class))\n"
        "client:close()\n"
        "return 0", port, NULL), 0);

    /* conn:query on a real server: the session is closed, the next
     * connection works. */
    if (db_url && *db_url) {
        ASSERT_INT_EQ(run_chunk(PRELUDE
            "local pg = require 'ragops.pg'\n"
            "local conn = assert(pg.connect(db_url))\n"
            "local out = wait(function() return conn:query('select pg_sleep(60)') end)\n"
            "assert(out[1] == nil and out[2] == 'interrompido' and out[3] == '57014', tostring(out[2]))\n"
            "assert(not conn:is_ok())\n"
            "local again = assert(pg.connect(db_url))\n"
            "assert(again:query('select 1 as one')[1].one == 1)\n"
            "again:close()\n"
            "return 0", port, db_url), 0);
    } else {
        fprintf(stderr, "test_cancel: sem RAGOPS_TEST_DATABASE_URL; conn:query não testado\n");
    }
    close(fd);
    printf("test_cancel: ok\n");
    return 0;
}
