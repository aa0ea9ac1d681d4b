/*
 * test_utf8.c: the engine's UTF-8 rule (core/utf8.h) and core.utf8_check,
 * which skips plain ASCII 8 bytes at a time: the same answers as a byte by
 * byte walk and as decide.lua_utf8_check (the Lua twin busted uses), for a
 * NUL, a high byte or a multi-byte sequence at every position around the
 * 8-byte words, at every alignment, and for random texts of such bytes.
 */
#include "core/bridge.h"
#include "core/utf8.h"
#include "test_assert.h"

#include <stdint.h>

/* Bytes that matter to the rule: ASCII edges, NUL, continuation bytes,
 * leads of 2, 3 and 4 bytes (valid and not), and bytes never valid. */
static const unsigned char ALPHABET[] = {'a',  0x00, 0x01, 0x7F, 0x80, 0xA7, 0xBF, 0xC0, 0xC3,
                                         0xE2, 0x82, 0xAC, 0xED, 0xA0, 0xF0, 0x9F, 0xF4, 0xFF};

/* What rg_utf8_plain_prefix must answer, one byte at a time. */
static size_t plain_prefix_slow(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len && s[i] != 0 && s[i] < 0x80)
        i++;
    return i;
}

static uint32_t next_random(uint32_t *state)
{
    *state = *state * 1664525u + 1013904223u;
    return *state >> 8;
}

static void check_prefix(const unsigned char *s, size_t len)
{
    size_t fast = rg_utf8_plain_prefix(s, len), slow = plain_prefix_slow(s, len);
    if (fast != slow) {
        fprintf(stderr, "rg_utf8_plain_prefix de %zu bytes:", len);
        for (size_t i = 0; i < len; i++)
            fprintf(stderr, " %02x", s[i]);
        fprintf(stderr, "\n");
    }
    ASSERT_INT_EQ(fast, slow);
}

/* One special byte at every position of every length up to 40, at every
 * alignment of the start; then random texts over ALPHABET. */
static void test_plain_prefix(void)
{
    unsigned char buf[64];
    for (size_t align = 0; align < 8; align++)
        for (size_t len = 0; len <= 40; len++)
            for (size_t at = 0; at < len; at++)
                for (size_t k = 0; k < sizeof ALPHABET; k++) {
                    memset(buf, 'a', sizeof buf);
                    buf[align + at] = ALPHABET[k];
                    check_prefix(buf + align, len);
                }
    uint32_t state = 20;
    for (int round = 0; round < 200000; round++) {
        size_t len = next_random(&state) % 41, align = next_random(&state) % 8;
        for (size_t i = 0; i < len; i++)
            buf[align + i] = next_random(&state) % 4 ? 'a' : ALPHABET[next_random(&state) % sizeof ALPHABET];
        check_prefix(buf + align, len);
    }
}

/* The multi-byte rule itself, on its edges. */
static void test_sequence(void)
{
    ASSERT_INT_EQ(rg_utf8_sequence((const unsigned char *)"a", 1), 1);
    ASSERT_INT_EQ(rg_utf8_sequence((const unsigned char *)"\0", 1), 1);
    ASSERT_INT_EQ(rg_utf8_sequence((const unsigned char *)"\xC3\xA7", 2), 2);
    ASSERT_INT_EQ(rg_utf8_sequence((const unsigned char *)"\xC3\xA7", 1), 0);
    ASSERT_INT_EQ(rg_utf8_sequence((const unsigned char *)"\xE2\x82\xAC", 3), 3);
    ASSERT_INT_EQ(rg_utf8_sequence((const unsigned char *)"\xF0\x9F\x98\x80", 4), 4);
    ASSERT_INT_EQ(rg_utf8_sequence((const unsigned char *)"\xC0\x80", 2), 0);         /* overlong NUL */
    ASSERT_INT_EQ(rg_utf8_sequence((const unsigned char *)"\xE0\x80\x80", 3), 0);     /* overlong */
    ASSERT_INT_EQ(rg_utf8_sequence((const unsigned char *)"\xED\xA0\x80", 3), 0);     /* surrogate */
    ASSERT_INT_EQ(rg_utf8_sequence((const unsigned char *)"\xF4\x90\x80\x80", 4), 0); /* past U+10FFFF */
    ASSERT_INT_EQ(rg_utf8_sequence((const unsigned char *)"\x80", 1), 0);
}

/* core.utf8_check against decide.lua_utf8_check (ok, kind, position) on
 * the same kinds of texts, inside the real bridge. */
static const char DIFFERENTIAL[] =
    "local core = require 'ragops.core'\n"
    "local lua_check = require('ragops.run.stages.decide').lua_utf8_check\n"
    "local alphabet = { 97, 0, 1, 127, 128, 167, 191, 192, 195, 226, 130, 172, 237, 160, 240, 159, 244, 255 }\n"
    "local state, checked = 7, 0\n"
    "local function random(n) state = (state * 1103515245 + 12345) % 2147483648; return state % n end\n"
    "local function same(s)\n"
    "  local a = { core.utf8_check(s) }\n"
    "  local b = { lua_check(s) }\n"
    "  checked = checked + 1\n"
    "  if a[1] ~= b[1] or a[2] ~= b[2] or a[3] ~= b[3] then\n"
    "    io.stderr:write(('core.utf8_check(%q) = %s, %s, %s; lua_utf8_check = %s, %s, %s\\n')\n"
    "      :format(s, tostring(a[1]), tostring(a[2]), tostring(a[3]), tostring(b[1]), tostring(b[2]), tostring(b[3])))\n"
    "    return false\n"
    "  end\n"
    "  return true\n"
    "end\n"
    "for len = 0, 40 do\n"
    "  for at = 1, len do\n"
    "    for _, byte in ipairs(alphabet) do\n"
    "      local s = ('a'):rep(at - 1) .. string.char(byte) .. ('a'):rep(len - at)\n"
    "      if not same(s) or not same(s .. '\\195\\167') or not same('\\226\\130\\172' .. s) then return 1 end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "for _ = 1, 50000 do\n"
    "  local bytes = {}\n"
    "  for i = 1, random(41) do bytes[i] = random(4) > 0 and 97 or alphabet[random(#alphabet) + 1] end\n"
    "  if not same(string.char(unpack(bytes))) then return 1 end\n"
    "end\n"
    "return checked > 80000 and 0 or 2\n";

static int run_chunk(const char *code)
{
    char lua_dir[4096];
    const char *src = getenv("RAGOPS_SOURCE_DIR");
    snprintf(lua_dir, sizeof lua_dir, "%s/lua", src ? src : RAGOPS_SOURCE_DIR);
    lua_State *L = rg_bridge_open(lua_dir);
    ASSERT(L != NULL);
    if (luaL_loadstring(L, code) != 0) {
        fprintf(stderr, "erro de sintaxe: %s\n", lua_tostring(L, -1));
        abort();
    }
    int status = rg_bridge_run_main(L, 0, NULL);
    rg_bridge_close(L);
    return status;
}

int main(void)
{
    test_sequence();
    test_plain_prefix();
    ASSERT_INT_EQ(run_chunk(DIFFERENTIAL), 0);
    printf("test_utf8: ok\n");
    return 0;
}
