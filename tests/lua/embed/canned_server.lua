-- canned_server.lua: a tiny HTTP/1.1 server for the dialect specs, run by
-- plain luajit (FFI sockets, no other dependency): it listens on a free
-- loopback port (written to DIR/port), records every request as one JSON
-- line in DIR/requests.log ({ method, path, headers = { lowercased name =
-- value }, body }) and answers from ANSWERS, a Lua file returning
-- { [path without query] = function(req) return status, body, extra_headers end }.
-- One request per connection (Connection: close), one connection at a time;
-- a request in absolute-form (sent to a proxy) is answered by its path too.
-- It exits by itself after LIFETIME seconds (a spec that died leaves nothing).
--   luajit canned_server.lua DIR ANSWERS
local ffi = require "ffi"
local cjson = require "cjson"

local DIR, ANSWERS = arg[1], arg[2]
assert(DIR and ANSWERS, "uso: luajit canned_server.lua DIR ANSWERS")
local LIFETIME = 300

ffi.cdef [[
struct rg_sockaddr_in { uint16_t family; uint16_t port; uint32_t addr; char zero[8]; };
int socket(int domain, int type, int protocol);
int setsockopt(int fd, int level, int name, const void *value, unsigned len);
int bind(int fd, const void *addr, unsigned len);
int listen(int fd, int backlog);
int accept(int fd, void *addr, void *len);
int getsockname(int fd, void *addr, unsigned *len);
long read(int fd, void *buf, size_t n);
long write(int fd, const void *buf, size_t n);
int close(int fd);
unsigned alarm(unsigned seconds);
]]
local C = ffi.C
local AF_INET, SOCK_STREAM, SOL_SOCKET, SO_REUSEADDR = 2, 1, 1, 2

local function listen()
  local fd = C.socket(AF_INET, SOCK_STREAM, 0)
  assert(fd >= 0, "socket")
  C.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, ffi.new("int[1]", 1), 4)
  local sa = ffi.new("struct rg_sockaddr_in")
  sa.family = AF_INET
  sa.port = 0
  sa.addr = 0x0100007f -- 127.0.0.1 in network order
  assert(C.bind(fd, sa, ffi.sizeof(sa)) == 0, "bind")
  assert(C.listen(fd, 16) == 0, "listen")
  local len = ffi.new("unsigned[1]", ffi.sizeof(sa))
  assert(C.getsockname(fd, sa, len) == 0, "getsockname")
  local port = math.floor(sa.port / 256) + (sa.port % 256) * 256 -- ntohs
  return fd, port
end

local buf = ffi.new("char[65536]")

-- The request on fd: { method, path, query, headers, body }, or nil at EOF.
local function read_request(fd)
  local data = ""
  while true do
    local head_end = data:find("\r\n\r\n", 1, true)
    if head_end then
      local head = data:sub(1, head_end - 1)
      local method, target = head:match("^(%u+) (%S+) HTTP/1%.%d")
      if not method then return nil end
      local headers = {}
      for name, value in head:gmatch("\r\n([^:\r\n]+): ?([^\r\n]*)") do headers[name:lower()] = value end
      local want = tonumber(headers["content-length"] or "0") or 0
      if #data - (head_end + 3) >= want then
        -- a request through a proxy names the whole URL ("absolute-form"): this server is then the proxy
        local path, query = target:gsub("^https?://[^/]*", ""):match("^([^?]*)%??(.*)$")
        return { method = method, path = path, query = query, target = target, headers = headers,
                 body = data:sub(head_end + 4, head_end + 3 + want) }
      end
    end
    local n = C.read(fd, buf, 65536)
    if n <= 0 then return nil end
    data = data .. ffi.string(buf, n)
  end
end

local function write_all(fd, text)
  local at = 0
  while at < #text do
    local n = C.write(fd, ffi.cast("const char *", text) + at, #text - at)
    if n <= 0 then return end
    at = at + n
  end
end

local REASONS = { [200] = "OK", [400] = "Bad Request", [401] = "Unauthorized", [404] = "Not Found",
                  [424] = "Failed Dependency", [500] = "Internal Server Error" }

local function answer(fd, req, answers)
  local handler = answers[req.path]
  local status, body, extra = 404, '{"error":"rota desconhecida"}', nil
  if handler then status, body, extra = handler(req) end
  local lines = { ("HTTP/1.1 %d %s"):format(status, REASONS[status] or "Status"),
                  "Content-Type: application/json", "Content-Length: " .. #body, "Connection: close" }
  for _, line in ipairs(extra or {}) do lines[#lines + 1] = line end
  write_all(fd, table.concat(lines, "\r\n") .. "\r\n\r\n" .. body)
end

local function main()
  C.alarm(LIFETIME)
  local answers = assert(dofile(ANSWERS))
  local fd, port = listen()
  local f = assert(io.open(DIR .. "/port.tmp", "w"))
  f:write(port)
  f:close()
  os.rename(DIR .. "/port.tmp", DIR .. "/port")
  while true do
    local conn = C.accept(fd, nil, nil)
    if conn >= 0 then
      local req = read_request(conn)
      if req then
        local log = assert(io.open(DIR .. "/requests.log", "a"))
        log:write(cjson.encode({ method = req.method, path = req.path, query = req.query, headers = req.headers,
                                 body = req.body }), "\n")
        log:close()
        answer(conn, req, answers)
      end
      C.close(conn)
    end
  end
end

main()
